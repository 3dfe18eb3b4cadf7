"""The layer library: drop-in replacements for a transformer FFN (see docs/method.md)."""

from hypermoe.moe.build import VARIANTS, build_moe_stack, param_matched_bottleneck, settings_from_config
from hypermoe.moe.collect import moe_layers, sum_aux_losses, weighted_aux_loss
from hypermoe.moe.experts import FFN, Experts
from hypermoe.moe.hyper import HyperMoE, HyperNetwork
from hypermoe.moe.layers import DenseMoE, TopKAdapterMoE, TopKMoE
from hypermoe.moe.settings import (
    AGGREGATIONS,
    DenseMoESettings,
    FFNSettings,
    HyperMoESettings,
    HypernetworkSettings,
    TopKAdapterSettings,
    TopKSettings,
)

__all__ = [
    "AGGREGATIONS",
    "FFN",
    "VARIANTS",
    "DenseMoE",
    "DenseMoESettings",
    "Experts",
    "FFNSettings",
    "HyperMoE",
    "HyperMoESettings",
    "HyperNetwork",
    "HypernetworkSettings",
    "TopKAdapterMoE",
    "TopKAdapterSettings",
    "TopKMoE",
    "TopKSettings",
    "build_moe_stack",
    "moe_layers",
    "param_matched_bottleneck",
    "settings_from_config",
    "sum_aux_losses",
    "weighted_aux_loss",
]
