"""MoE layers that replace a transformer FFN: (b, t, d) -> (b, t, d).

Shape legend: b batch, t sequence, n = b * t tokens, d d_model, f d_ff, e experts,
k experts per token, r adapter bottleneck.

Every layer records, on each forward, ``aux_losses`` (unweighted) and ``routing_stats``
(detached); callers collect them with ``hypermoe.moe.collect`` and weight them in one place.
``attention_mask`` (b, t) is 1/True for real tokens and 0/False for padding: padding is
never routed, never counted, and its output is zero.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from hypermoe.moe.checks import check_positive
from hypermoe.moe.dispatch import capacity, gate_rows, gather_rows, plan_dispatch, scatter_slots
from hypermoe.moe.experts import FFN, Experts
from hypermoe.moe.grouped import resolve_kernel
from hypermoe.moe.router import Routing, SwitchRouter, build_router
from hypermoe.moe.settings import DenseMoESettings, TopKAdapterSettings, TopKSettings
from hypermoe.moe.stats import dense_routing_stats, routing_stats, top_expert

# (routed rows (kept, d), rows per expert, their gated expert outputs (kept, d)) -> (kept, d)
RowTerm = Callable[[Tensor, list[int], Tensor], Tensor]


def flatten_tokens(x: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(b, t, d) and an optional (b, t) mask -> tokens (n, d) and valid (n,) bool."""
    tokens = x.reshape(-1, x.shape[-1])
    if attention_mask is None:
        return tokens, torch.ones(tokens.shape[0], dtype=torch.bool, device=x.device)
    if attention_mask.shape != x.shape[:-1]:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {tuple(x.shape[:-1])}")
    return tokens, attention_mask.reshape(-1).bool()


def count_sequences(x: Tensor) -> int:
    """The sequences in x (..., t, d), whose tokens ``flatten_tokens`` lays one sequence after
    another: the product of the leading dims; (t, d) is one sequence, and so is an empty batch
    (one empty group for the balance loss)."""
    return max(1, math.prod(x.shape[:-2]))


class RecordsLastForward(nn.Module):
    """A layer whose ``aux_losses`` and ``routing_stats`` are the last forward's. After a training
    forward the aux losses are part of that step's autograd graph, which ``copy.deepcopy`` refuses
    to copy: a copy (or a pickle, which would keep them as stale tensors) starts without them, as a
    fresh layer does."""

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "aux_losses": {}, "routing_stats": {}, "top_expert": None}


def _experts_from(
    num_experts: int, d_model: int, d_ff: int, activation: str, bias: bool, dropout: float, dense_ffn: FFN | None
) -> Experts:
    experts = Experts(num_experts, d_model, d_ff, activation, bias, dropout)
    if dense_ffn is not None:
        experts.upcycle_from(dense_ffn)
    return experts


class DenseMoE(RecordsLastForward):
    """All e experts on every token, weighted by the router softmax (no sparsity).

    Records ``z`` (router z-loss); the balance loss is constant for dense routing, so it is
    not recorded. ``load`` in the stats is the mean routing weight of each expert (for the
    sparse layers it is the share of assignments).
    """

    def __init__(
        self,
        settings: DenseMoESettings,
        d_model: int,
        d_ff: int,
        activation: str,
        bias: bool,
        dropout: float = 0.0,
        dense_ffn: FFN | None = None,
    ):
        super().__init__()
        self.num_experts = num_experts = settings.num_experts
        self.router = SwitchRouter(d_model, num_experts, top_k=num_experts)
        self.experts = _experts_from(num_experts, d_model, d_ff, activation, bias, dropout, dense_ffn)
        self.aux_losses: dict[str, Tensor] = {}
        self.routing_stats: dict[str, Tensor] = {}
        self.top_expert: Tensor | None = None  # (n,) the last forward's first-choice expert per token

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        tokens, valid = flatten_tokens(x, attention_mask)
        routing = self.router(tokens, valid)
        n = tokens.shape[0]
        # every expert on every token: the grouped FFN over e copies of the tokens
        expert_out = self.experts(tokens.repeat(self.num_experts, 1), [n] * self.num_experts)  # (e * n, d)
        weights = (routing.probs * valid.unsqueeze(-1)).t().to(expert_out.dtype)  # (e, n)
        y = (expert_out.view(self.num_experts, n, x.shape[-1]) * weights.unsqueeze(-1)).sum(0)  # (n, d)
        self.aux_losses = {"z": routing.aux_losses["z"]}
        self.routing_stats = dense_routing_stats(routing.logits, routing.probs, valid)
        self.top_expert = top_expert(routing.expert_index, valid)  # the largest weight
        return y.view_as(x)


class TopKMoE(RecordsLastForward):
    """Sparse MoE: each token runs on its top-k experts only.

    ``settings`` (``TopKSettings``) says how tokens are routed: gating, capacity (None = dropless,
    else each expert takes at most ceil(factor * k * tokens / e) assignments, first come first
    served), what a dropped token outputs, the balance loss's groups and the expert kernel.
    dense_ffn: if given, every expert starts as a copy of it (sparse upcycling).
    """

    def __init__(
        self,
        settings: TopKSettings,
        d_model: int,
        d_ff: int,
        activation: str,
        bias: bool,
        dropout: float = 0.0,
        dense_ffn: FFN | None = None,
    ):
        super().__init__()
        num_experts, top_k = settings.num_experts, settings.top_k
        self.d_model, self.num_experts, self.top_k = d_model, num_experts, top_k
        self.capacity_factor_train, self.capacity_factor_eval = (
            settings.capacity_factor_train,
            settings.capacity_factor_eval,
        )
        self.kernel, self.dropped_tokens = settings.kernel, settings.dropped_tokens
        self.router = build_router(
            settings.gating,
            d_model,
            num_experts,
            top_k,
            settings.jitter_eps,
            settings.noise_epsilon,
            settings.balance_group,
        )
        self.experts = _experts_from(num_experts, d_model, d_ff, activation, bias, dropout, dense_ffn)
        self.aux_losses: dict[str, Tensor] = {}
        self.routing_stats: dict[str, Tensor] = {}
        self.top_expert: Tensor | None = None  # (n,) the last forward's first-choice expert per token

    def inactive_parameters_per_token(self) -> int:
        """The parameters a token does not use: the N - k experts it does not visit. A variant
        whose tokens skip parameters says so with this method (``hypermoe.params``)."""
        return (self.num_experts - self.top_k) * sum(p.numel() for p in self.experts.ffns[0].parameters())

    def capacity_factor(self) -> float | None:
        """The capacity factor of the current mode (training or eval); None is dropless."""
        return self.capacity_factor_train if self.training else self.capacity_factor_eval

    def moe(
        self, tokens: Tensor, valid: Tensor, num_sequences: int, add_to_rows: RowTerm | None = None
    ) -> tuple[Tensor, Routing]:
        """The routed-experts output (n, d) and the routing behind it; tokens (n, d) are those of
        ``num_sequences`` sequences of equal length, one after another.

        ``add_to_rows(routed, counts, gated)``: a term added, ungated, to each kept assignment's
        gated output before the scatter back to token order, computed from the same routed rows
        (kept, d), grouped by expert with ``counts`` rows each (``loop`` kernel only); it is added
        into ``gated`` in place, once ``add_to_rows`` has returned. HyperMoE's top-1 path uses it:
        there a token's selected set is its expert, so its HyperExpert needs no sort, gather or
        scatter of its own.
        """
        routing = self.router(tokens, valid, num_sequences)
        factor = self.capacity_factor()
        limit = None if factor is None else capacity(factor, valid, self.top_k, self.num_experts)
        plan = plan_dispatch(routing.expert_index, valid, self.num_experts, limit)
        if resolve_kernel(self.kernel, tokens) == "loop":
            kept, counts = plan.kept()
            routed = gather_rows(tokens, kept % plan.num_tokens)
            expert_out = self.experts(routed, counts)  # (kept, d)
        else:  # every assignment, the dropped ones last (zero output): no host sync
            if add_to_rows is not None:
                raise ValueError("add_to_rows needs the loop kernel's per-expert row counts")
            kept = plan.order
            row_expert = plan.sorted_expert.clamp(max=self.num_experts - 1)
            routed = gather_rows(tokens, kept % plan.num_tokens)
            expert_out = self.experts.forward_mm(routed, plan.group_ends(), row_expert)
        rows = gate_rows(expert_out, kept, routing.gates)
        if add_to_rows is not None:  # in place: the gating product saves its inputs, not rows
            rows = rows.add_(add_to_rows(routed, counts, rows))
        y = scatter_slots(rows, kept, plan.num_tokens, self.top_k)
        if self.dropped_tokens == "input" and limit is not None:
            dropped_gate = (routing.gates * plan.overflow.view(self.top_k, -1).t()).sum(-1, keepdim=True)  # (n, 1)
            y = y + (tokens * dropped_gate).to(y.dtype)
        self.aux_losses = dict(routing.aux_losses)
        self.routing_stats = routing_stats(routing.logits, routing.probs, routing.expert_index, plan.counts, valid)
        self.top_expert = top_expert(routing.expert_index, valid)
        return y, routing

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        tokens, valid = flatten_tokens(x, attention_mask)
        y, _ = self.moe(tokens, valid, count_sequences(x))
        return y.view_as(x)


class Adapter(nn.Module):
    """A static bottleneck d -> r -> d with ReLU; the up projection starts at zero so the
    layer starts as the plain MoE, as the HyperExpert starts near zero."""

    def __init__(self, d_model: int, bottleneck: int):
        super().__init__()
        check_positive("adapter_bottleneck", bottleneck)
        self.down = nn.Linear(d_model, bottleneck)
        self.up = nn.Linear(bottleneck, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(torch.relu(self.down(x)))


class TopKAdapterMoE(TopKMoE):
    """TopKMoE plus one static bottleneck adapter on the same input: the control that tells
    "the generated HyperExpert helps" from "more parameters help". Pick ``adapter_bottleneck``
    with ``hypermoe.moe.build.param_matched_bottleneck`` to match HyperMoE's parameters
    (``hypermoe.moe.build`` does so for ``adapter_bottleneck="matched"``)."""

    def __init__(self, settings: TopKAdapterSettings, *args, **kwargs):
        super().__init__(settings, *args, **kwargs)
        self.adapter = Adapter(self.d_model, settings.adapter_bottleneck)

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        tokens, valid = flatten_tokens(x, attention_mask)
        y, _ = self.moe(tokens, valid, count_sequences(x))
        y = y.add_(self.adapter(tokens) * valid.unsqueeze(-1).to(y.dtype))  # in place, as HyperMoE adds its own
        return y.view_as(x)
