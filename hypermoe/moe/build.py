"""Build the MoE layers of one stack from a variant's settings, with HyperMoE's hypernetwork shared."""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hypermoe.moe.checks import check_choice, check_positive
from hypermoe.moe.experts import FFN
from hypermoe.moe.hyper import HyperMoE, HyperNetwork
from hypermoe.moe.layers import DenseMoE, TopKAdapterMoE, TopKMoE
from hypermoe.moe.settings import (
    MATCHED,
    DenseMoESettings,
    FFNSettings,
    HyperMoESettings,
    TopKAdapterSettings,
    TopKSettings,
)


def _ffn(settings: FFNSettings, *shape: Any, dense_ffn: FFN | None = None, **kwargs: Any) -> FFN:
    """The backbone's own FFN: a copy of ``dense_ffn`` when given."""
    layer = FFN(*shape, **kwargs)
    if dense_ffn is not None:
        layer.load_state_dict(dense_ffn.state_dict())
    return layer


@dataclasses.dataclass(frozen=True)
class Variant:
    """A ``model.variant``: its settings and the layer made from them, called as
    ``layer(settings, d_model, d_ff, activation, bias, dropout=, dense_ffn=, **per_layer)``."""

    settings: type
    layer: Callable[..., nn.Module]


# Every model.variant by name; conf/model/<name>.yaml selects one (docs/extending.md adds one).
VARIANTS = {
    "ffn": Variant(FFNSettings, _ffn),
    "dense_moe": Variant(DenseMoESettings, DenseMoE),
    "topk": Variant(TopKSettings, TopKMoE),
    "hypermoe": Variant(HyperMoESettings, HyperMoE),
    "topk_adapter": Variant(TopKAdapterSettings, TopKAdapterMoE),
}
# keys of conf/model/*.yaml that are no layer setting: the blocks given the layer (the backbone's)
# and the aux loss coefficients (the trainer's)
MODEL_KEYS = ("variant", "moe_layers", "aux_loss_coefficients")


def settings_from_config(model: Mapping[str, Any]) -> Any:
    """The settings of ``model["variant"]`` from a ``conf/model/*.yaml`` mapping, every value
    checked; a key the variant does not take is named, with the ones it takes."""
    variant = model.get("variant")
    check_choice("variant", variant, VARIANTS)
    values = {key: value for key, value in model.items() if key not in MODEL_KEYS}
    return _settings(VARIANTS[variant].settings, values, f"variant={variant!r}")


def _variant_of(settings: Any) -> Variant:
    """The variant whose settings ``settings`` are, read from VARIANTS when called (so a variant
    added to it later is found). Each variant has a settings class of its own: the class decides
    the layer."""
    owners = {name: variant for name, variant in VARIANTS.items() if type(settings) is variant.settings}
    if len(owners) != 1:
        raise ValueError(
            f"{type(settings).__name__} are the settings of {len(owners)} variants in VARIANTS {sorted(owners)}: "
            "each variant needs a settings class of its own (a subclass with no new field will do)"
        )
    return next(iter(owners.values()))


def _settings(cls: type, values: Mapping[str, Any], owner: str) -> Any:
    """``cls(**values)`` with nested settings made from their mappings."""
    fields = {spec.name: spec for spec in dataclasses.fields(cls)}
    if "hypernetwork" in values and "hypernetwork" not in fields:
        raise ValueError(f"hypernetwork settings were given, but {owner} has no hypernetwork")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{owner} takes no {unknown}; it takes {sorted(fields)}")
    nested = {
        name: _settings(fields[name].type, value, name)
        for name, value in values.items()
        if dataclasses.is_dataclass(fields[name].type) and isinstance(value, Mapping)
    }
    return cls(**{**values, **nested})


def build_moe_stack(
    settings: Any,
    num_layers: int,
    d_model: int,
    d_ff: int,
    activation: str,
    bias: bool,
    dense_ffns: Sequence[FFN] | None = None,
    dropout: float = 0.0,
) -> nn.ModuleList:
    """``num_layers`` layers of the variant ``settings`` belongs to; layer i is upcycled from
    ``dense_ffns[i]`` if given.

    HyperMoE layers share one HyperNetwork(num_layers) unless ``share_hypernetwork`` is
    False (the no-sharing ablation: each layer owns a one-layer hypernetwork). A topk_adapter
    with ``adapter_bottleneck="matched"`` gets the width ``matched_adapter_width`` finds.
    """
    check_positive("num_layers", num_layers)
    if dense_ffns is not None and len(dense_ffns) != num_layers:
        raise ValueError(f"got {len(dense_ffns)} dense_ffns for num_layers={num_layers}")
    if isinstance(settings, TopKAdapterSettings) and settings.adapter_bottleneck == MATCHED:
        width = matched_adapter_width(settings, num_layers, d_model, d_ff, activation, bias)
        settings = dataclasses.replace(settings, adapter_bottleneck=width)
    layer = _variant_of(settings).layer
    shape = (d_model, d_ff, activation, bias)
    per_layer = _hypernetworks(settings, d_model, num_layers)
    sources = dense_ffns or [None] * num_layers
    layers = (
        layer(settings, *shape, dropout=dropout, dense_ffn=source, **extra)
        for source, extra in zip(sources, per_layer, strict=True)
    )
    return nn.ModuleList(layers)


def _hypernetworks(settings: Any, d_model: int, num_layers: int) -> list[dict[str, Any]]:
    """Each layer's hypernetwork and its index in it, for HyperMoE settings; nothing for others."""
    if not isinstance(settings, HyperMoESettings):
        return [{}] * num_layers
    if settings.share_hypernetwork:
        shared = HyperNetwork(d_model, num_layers, settings.hypernetwork)
        return [{"hypernetwork": shared, "layer_index": i} for i in range(num_layers)]
    return [
        {"hypernetwork": HyperNetwork(d_model, 1, settings.hypernetwork), "layer_index": 0} for _ in range(num_layers)
    ]


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


def matched_adapter_width(
    settings: TopKAdapterSettings, num_layers: int, d_model: int, d_ff: int, activation: str, bias: bool
) -> int:
    """The adapter width whose parameters match, per layer, those HyperMoE adds: HyperMoE with
    ``HyperMoESettings``' own defaults and the adapter's routed settings, counted on the meta device."""
    hyper = HyperMoESettings(**settings.routed())
    with torch.device("meta"):  # only counted, never run
        reference = build_moe_stack(hyper, num_layers, d_model, d_ff, activation, bias)
    return param_matched_bottleneck(d_model, hyper_parameters_per_layer(reference))


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
    """Build a stack from a ``conf/model/*.yaml`` mapping (``settings_from_config``)."""
    settings = settings_from_config(model)
    return build_moe_stack(settings, num_layers, d_model, d_ff, activation, bias, dense_ffns, dropout)
