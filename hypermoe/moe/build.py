"""Build the MoE layers of one stack by variant name, with HyperMoE's hypernetwork shared."""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hypermoe.moe.checks import check_choice, check_positive, check_types
from hypermoe.moe.experts import FFN
from hypermoe.moe.hyper import HyperMoE, HyperNetwork
from hypermoe.moe.layers import DenseMoE, TopKAdapterMoE, TopKMoE

VARIANTS = ("ffn", "dense_moe", "topk", "hypermoe", "topk_adapter")
# Arguments each variant takes beyond the FFN shape, so a misplaced key fails loudly.
_ROUTED_KEYS = {
    "num_experts",
    "top_k",
    "gating",
    "capacity_factor_train",
    "capacity_factor_eval",
    "jitter_eps",
    "noise_epsilon",
    "dropped_tokens",
    "balance_group",
    "kernel",
}
_LAYER_CLASSES = {
    "ffn": FFN,
    "dense_moe": DenseMoE,
    "topk": TopKMoE,
    "topk_adapter": TopKAdapterMoE,
    "hypermoe": HyperMoE,
}
_EXTRA_KEYS = {
    "ffn": set(),
    "dense_moe": {"num_experts"},
    "topk": _ROUTED_KEYS,
    "topk_adapter": _ROUTED_KEYS | {"adapter_bottleneck"},
    "hypermoe": _ROUTED_KEYS | {"expert_embedding_dim", "aggregation", "generation"},
}


def build_moe_stack(
    variant: str,
    num_layers: int,
    d_model: int,
    d_ff: int,
    activation: str,
    bias: bool,
    layer_kwargs: Mapping[str, Any],
    hypernetwork_kwargs: Mapping[str, Any] | None = None,
    share_hypernetwork: bool = True,
    dense_ffns: Sequence[FFN] | None = None,
    dropout: float = 0.0,
) -> nn.ModuleList:
    """``num_layers`` layers of ``variant``; layer i is upcycled from ``dense_ffns[i]`` if given.

    HyperMoE layers share one HyperNetwork(num_layers) unless ``share_hypernetwork`` is
    False (the no-sharing ablation: each layer owns a one-layer hypernetwork).
    """
    check_choice("variant", variant, VARIANTS)
    check_positive("num_layers", num_layers)
    unknown = sorted(set(layer_kwargs) - _EXTRA_KEYS[variant])
    if unknown:
        raise ValueError(f"variant={variant!r} takes no {unknown}; it takes {sorted(_EXTRA_KEYS[variant])}")
    if hypernetwork_kwargs is not None and variant != "hypermoe":
        raise ValueError(f"hypernetwork settings were given, but variant={variant!r} has no hypernetwork")
    check_types(_LAYER_CLASSES[variant], layer_kwargs)
    check_types(HyperNetwork, hypernetwork_kwargs or {})
    if dense_ffns is not None and len(dense_ffns) != num_layers:
        raise ValueError(f"got {len(dense_ffns)} dense_ffns for num_layers={num_layers}")

    shape = {"d_model": d_model, "d_ff": d_ff, "activation": activation, "bias": bias, "dropout": dropout}
    hyper_kwargs = dict(hypernetwork_kwargs or {})
    shared = HyperNetwork(d_model, num_layers, **hyper_kwargs) if variant == "hypermoe" and share_hypernetwork else None
    layers = []
    for i in range(num_layers):
        source = None if dense_ffns is None else dense_ffns[i]
        if variant == "ffn":
            layer = FFN(**shape)
            if source is not None:
                layer.load_state_dict(source.state_dict())
        elif variant == "dense_moe":
            layer = DenseMoE(**shape, **layer_kwargs, dense_ffn=source)
        elif variant == "topk":
            layer = TopKMoE(**shape, **layer_kwargs, dense_ffn=source)
        elif variant == "topk_adapter":
            layer = TopKAdapterMoE(**shape, **layer_kwargs, dense_ffn=source)
        else:
            hypernetwork = shared or HyperNetwork(d_model, 1, **hyper_kwargs)
            layer = HyperMoE(
                **shape, **layer_kwargs, dense_ffn=source, hypernetwork=hypernetwork, layer_index=i if shared else 0
            )
        layers.append(layer)
    return nn.ModuleList(layers)


def count_parameters(module: nn.Module) -> int:
    """Distinct parameters (a shared hypernetwork counts once)."""
    return sum(p.numel() for p in module.parameters())


def hyper_parameters(layers: Sequence[nn.Module]) -> int:
    """HyperMoE's extra parameters in ``layers``: each layer's selection embedding, and every
    distinct hypernetwork once (a shared one is counted once)."""
    parts = [part for layer in layers for part in (layer.selection, layer.hypernetwork)]
    return sum({id(p): p.numel() for part in parts for p in part.parameters()}.values())


def hyper_parameters_per_layer(stack: nn.ModuleList) -> float:
    """HyperMoE's extra parameters per layer of ``stack``."""
    return hyper_parameters(stack) / len(stack)


def param_matched_bottleneck(d_model: int, target_parameters: float) -> int:
    """Width r whose adapter (2 d r + r + d parameters) comes closest to ``target_parameters``."""
    exact = (target_parameters - d_model) / (2 * d_model + 1)
    candidates = {max(1, int(exact)), max(1, int(exact) + 1)}
    return min(candidates, key=lambda r: abs(2 * d_model * r + r + d_model - target_parameters))


def stack_from_config(
    model: Mapping[str, Any],
    num_layers: int,
    d_model: int,
    d_ff: int,
    activation: str,
    bias: bool,
    dense_ffns: Sequence[FFN] | None = None,
    dropout: float = 0.0,
) -> nn.ModuleList:
    """Build a stack from a ``conf/model/*.yaml`` mapping (keys = layer argument names;
    ``moe_layers`` and ``aux_loss_coefficients`` belong to the backbone and the trainer)."""
    settings = dict(model)
    variant = settings.pop("variant")
    settings.pop("aux_loss_coefficients", None)
    settings.pop("moe_layers", None)
    hypernetwork_kwargs = settings.pop("hypernetwork", None)
    share = settings.pop("share_hypernetwork", True)
    if not isinstance(share, bool):
        raise ValueError(f"share_hypernetwork={share!r} must be true or false")
    matched_to = settings.pop("matched_to", None)  # the HyperMoE a "matched" adapter is sized after
    if settings.get("adapter_bottleneck") == "matched":
        if matched_to is None:
            raise ValueError("adapter_bottleneck='matched' needs matched_to: the HyperMoE settings to match")
        hyper = {**settings, **matched_to, "variant": "hypermoe"}
        hyper.pop("adapter_bottleneck")
        with torch.device("meta"):  # only counted, never run
            reference = stack_from_config(hyper, num_layers, d_model, d_ff, activation, bias)
        settings["adapter_bottleneck"] = param_matched_bottleneck(d_model, hyper_parameters_per_layer(reference))
    return build_moe_stack(
        variant,
        num_layers,
        d_model,
        d_ff,
        activation,
        bias,
        layer_kwargs=settings,
        hypernetwork_kwargs=hypernetwork_kwargs,
        share_hypernetwork=share,
        dense_ffns=dense_ffns,
        dropout=dropout,
    )
