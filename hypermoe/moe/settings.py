"""The settings of each MoE variant, defined once: names, types, defaults and the values allowed.

One dataclass per variant (as megablocks' ``Arguments``): the layer is built from it
(``hypermoe.moe.build``), a ``model.*`` mapping is checked by constructing it, and the Hydra
schema of ``conf/model/*.yaml`` is made from it (``hypermoe.config``). The layer's shape
(d_model, d_ff, activation, bias, dropout) is the backbone's, so it is no setting here.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hypermoe.moe.checks import check_capacity_factor, check_choice, check_field_types, check_positive, check_top_k
from hypermoe.moe.grouped import KERNELS
from hypermoe.moe.router import BALANCE_GROUPS, GATINGS

# What a real token dropped for capacity outputs: zero (Mesh TensorFlow, transformers from 4.52), or
# its input times its gate, as if its expert were the identity (transformers up to 4.51, whose
# Switch layer the official HyperMoE code copies).
DROPPED_TOKENS = ("zero", "input")
# How the selection embedding aggregates expert embeddings (docs/method.md, step 2):
# sum/mean over the unselected experts (the method), gate_weighted (unselected, weighted by
# router probability), all experts, selected experts only, or a random N-k experts.
AGGREGATIONS = ("sum", "mean", "gate_weighted", "all", "selected", "random")
GENERATIONS = ("per_set", "per_token")
# adapter_bottleneck's value for "as wide as matches HyperMoE's extra parameters per layer"
MATCHED = "matched"


@dataclass
class FFNSettings:
    """variant=ffn: the backbone's own dense FFN; it has no settings of its own."""


@dataclass
class DenseMoESettings:
    """variant=dense_moe: all experts on every token, weighted by the router softmax."""

    num_experts: int = 8

    def __post_init__(self) -> None:
        check_positive("num_experts", self.num_experts)
        check_field_types(self)


@dataclass
class TopKSettings:
    """variant=topk: each token runs on its top-k experts (``hypermoe.moe.layers.TopKMoE``).

    gating: ``switch`` (softmax router, top-k probabilities as gates), ``renorm`` (those gates
    renormalised to sum to 1, straight-through) or ``noisy`` (Shazeer noisy top-k).
    capacity_factor_train / capacity_factor_eval: None = dropless. jitter_eps: switch only,
    multiplicative router-input noise in training. noise_epsilon: noisy only, added to the noise
    std. dropped_tokens: what a token over capacity outputs (``DROPPED_TOKENS``). balance_group:
    the Switch balance loss over each sequence or the whole batch. kernel: how the experts run
    (``auto`` takes grouped_mm on CUDA, the per-expert loop on CPU).
    """

    num_experts: int = 8
    top_k: int = 1
    gating: str = "switch"
    capacity_factor_train: float | None = None
    capacity_factor_eval: float | None = None
    jitter_eps: float | None = None
    noise_epsilon: float = 1e-2
    dropped_tokens: str = "zero"
    balance_group: str = "batch"
    kernel: str = "auto"

    def __post_init__(self) -> None:
        # the range checks take any value, so they come first: top_k=True is "an integer >= 1"
        check_top_k(self.top_k, self.num_experts)
        check_choice("gating", self.gating, GATINGS)
        check_choice("kernel", self.kernel, KERNELS)
        check_choice("dropped_tokens", self.dropped_tokens, DROPPED_TOKENS)
        check_choice("balance_group", self.balance_group, BALANCE_GROUPS)
        check_capacity_factor("capacity_factor_train", self.capacity_factor_train)
        check_capacity_factor("capacity_factor_eval", self.capacity_factor_eval)
        check_field_types(self)


@dataclass
class HypernetworkSettings:
    """The hypernetwork HyperMoE's layers share (``hypermoe.moe.hyper.HyperNetwork``): d_s, d_l,
    h and the generated HyperExpert's bottleneck b."""

    selection_dim: int = 128
    layer_embedding_dim: int = 10
    hidden_dim: int = 128
    bottleneck: int = 64

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            check_positive(spec.name, getattr(self, spec.name))


@dataclass
class HyperMoESettings(TopKSettings):
    """variant=hypermoe: TopKSettings plus the HyperExpert's. expert_embedding_dim: d_e.
    aggregation: which expert embeddings the selection embedding sums (``AGGREGATIONS``).
    generation: ``per_set`` (fast) or ``per_token`` (the reference; gate_weighted needs it).
    share_hypernetwork: false gives each layer its own hypernetwork (the no-sharing ablation)."""

    expert_embedding_dim: int = 128
    aggregation: str = "sum"
    generation: str = "per_set"
    share_hypernetwork: bool = True
    hypernetwork: HypernetworkSettings = field(default_factory=HypernetworkSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("expert_embedding_dim", self.expert_embedding_dim)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_choice("generation", self.generation, GENERATIONS)
        if self.aggregation == "gate_weighted" and self.generation == "per_set":
            raise ValueError(
                "aggregation='gate_weighted' weights embeddings by each token's own gate values, "
                "so it has no per-set shortcut: use generation='per_token'"
            )
        if self.num_experts > 62:
            raise ValueError(f"num_experts={self.num_experts} > 62: expert sets are keyed by an int64 bitmask")


@dataclass
class TopKAdapterSettings(TopKSettings):
    """variant=topk_adapter: TopKSettings plus one static bottleneck adapter, the control that
    tells "the generated HyperExpert helps" from "more parameters help". adapter_bottleneck: its
    width r, or ``matched``: the width whose parameters come closest to those HyperMoE (with
    HyperMoESettings' defaults and these routed settings) adds per layer."""

    adapter_bottleneck: Any = MATCHED  # int | "matched"; OmegaConf has no such union

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adapter_bottleneck != MATCHED:
            check_positive("adapter_bottleneck", self.adapter_bottleneck)

    def routed(self) -> dict[str, Any]:
        """The TopKSettings part, as keyword arguments."""
        return {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(TopKSettings)}
