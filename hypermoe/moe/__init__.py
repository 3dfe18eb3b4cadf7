"""The layer library: drop-in replacements for a transformer FFN (see docs/method.md)."""

from hypermoe.moe.build import VARIANTS, build_moe_stack, param_matched_bottleneck
from hypermoe.moe.collect import moe_layers, sum_aux_losses, weighted_aux_loss
from hypermoe.moe.experts import FFN, Experts
from hypermoe.moe.hyper import AGGREGATIONS, HyperMoE, HyperNetwork
from hypermoe.moe.layers import DenseMoE, TopKAdapterMoE, TopKMoE

__all__ = [
    "AGGREGATIONS",
    "FFN",
    "VARIANTS",
    "DenseMoE",
    "Experts",
    "HyperMoE",
    "HyperNetwork",
    "TopKAdapterMoE",
    "TopKMoE",
    "build_moe_stack",
    "moe_layers",
    "param_matched_bottleneck",
    "sum_aux_losses",
    "weighted_aux_loss",
]
