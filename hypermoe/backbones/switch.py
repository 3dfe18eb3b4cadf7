"""Switch Transformer (google/switch-base-8) with its sparse MLPs swapped for our MoE layers.

A Switch block's feed-forward part is ``layer[-1]``: RMS-style LayerNorm, ``mlp`` (a
``SwitchTransformersSparseMLP`` in every other block, a dense ``DenseActDense`` in the rest),
dropout and the residual. The chosen blocks get ``mlp`` replaced by a MoE layer that starts
from the pretrained router and experts (a routed variant) or, in a dense block, from its
FFN (sparse upcycling). Encoder and decoder are separate stacks, each with its own
hypernetwork (docs/method.md).

Differences from transformers' layer, on purpose: padding is never routed (transformers
routes it and counts it in the aux losses), and capacity is set by a capacity factor over
the batch (``None`` = dropless) rather than a fixed ``expert_capacity`` per sequence. The
backbone config chooses transformers' balance-loss grouping (per sequence) and the official
code's rule for a token over capacity (its input times its gate); docs/method.md lists the rest.
"""

from typing import Any

import torch
from torch import nn
from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

from hypermoe.backbones.patching import MaskedMoE, RoutingContext, choose_layers, layer_activation
from hypermoe.backbones.sources import TOKENIZER_CLASSES, load_tokenizer, random_model, resolve_pretrained
from hypermoe.moe import FFN
from hypermoe.moe.build import build_moe_stack, settings_from_config


def load_switch(backbone: dict[str, Any]) -> tuple[SwitchTransformersForConditionalGeneration, Any]:
    """The encoder-decoder (pretrained, or random from ``backbone['config']``) and its T5 tokenizer."""
    tokenizer = load_tokenizer(backbone["tokenizer"], backbone.get("tokenizer_fallback"), TOKENIZER_CLASSES["seq2seq"])
    if backbone["pretrained"] is not None:
        model = SwitchTransformersForConditionalGeneration.from_pretrained(resolve_pretrained(backbone["pretrained"]))
    else:
        config = backbone.get("config") or {}
        model = random_model(SwitchTransformersForConditionalGeneration, SwitchTransformersConfig, config, {})
    return model, tokenizer


def sparse_blocks(stack: nn.Module) -> list[int]:
    return [i for i, block in enumerate(stack.block) if block.layer[-1].is_sparse]


def patch_stack(stack: nn.Module, model: dict, context: RoutingContext) -> tuple[nn.ModuleList, list[int]]:
    """Swap the MLP of the blocks ``model['moe_layers']`` names (``sparse``: the pretrained
    model's own MoE blocks) for ``model['variant']``; returns the new layers and their blocks."""
    cfg = stack.config
    if cfg.router_bias:
        raise ValueError("a Switch router with a bias (router_bias=True) has no counterpart in our routers")
    spec = model["moe_layers"]
    indices = sparse_blocks(stack) if spec == "sparse" else choose_layers(spec, len(stack.block))
    # a variant with experts (its settings have num_experts) takes a sparse block's router and experts
    variant_settings = settings_from_config(model)
    routed = hasattr(variant_settings, "num_experts")
    if routed and getattr(variant_settings, "gating", "switch") != "switch":
        raise ValueError(
            f"model.gating={variant_settings.gating!r}: Switch's pretrained routers are softmax (switch) routers"
        )
    if routed and variant_settings.num_experts != cfg.num_experts:
        raise ValueError(
            f"model.num_experts={variant_settings.num_experts}, but the Switch model has {cfg.num_experts}"
        )
    shape = {"d_model": cfg.d_model, "d_ff": cfg.d_ff, "activation": layer_activation(cfg.dense_act_fn)}
    mlps = [stack.block[i].layer[-1].mlp for i in indices]
    dense = [_dense_ffn(mlp, shape["activation"]) for mlp in mlps]
    layers = build_moe_stack(
        variant_settings, len(indices), **shape, bias=False, dense_ffns=dense, dropout=cfg.dropout_rate
    )
    for index, mlp, layer in zip(indices, mlps, layers, strict=True):
        if routed and hasattr(mlp, "router"):
            _copy_sparse(mlp, layer)
        stack.block[index].layer[-1].mlp = MaskedMoE(layer, context)
    return layers, indices


def _dense_ffn(mlp: nn.Module, activation: str) -> FFN:
    """The FFN a new layer starts from: a dense block's own; for a sparse block expert 0
    (overwritten by every expert and the router when the new layer is routed)."""
    source = mlp.experts["expert_0"] if hasattr(mlp, "router") else mlp
    return FFN.from_weights(source.wi.weight, source.wo.weight, activation)


@torch.no_grad()
def _copy_sparse(mlp: nn.Module, layer: nn.Module) -> None:
    """The pretrained router and experts into ``layer``, which keeps them as TopKMoE does
    (``router.weight``, ``experts.ffns``)."""
    layer.router.weight.copy_(mlp.router.classifier.weight)
    for i, expert in enumerate(layer.experts.ffns):
        expert.fc_in.weight.copy_(mlp.experts[f"expert_{i}"].wi.weight)
        expert.fc_out.weight.copy_(mlp.experts[f"expert_{i}"].wo.weight)
