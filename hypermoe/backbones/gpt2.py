"""GPT-2 with its block MLPs upcycled into MoE layers (the paper's GPT-2 MoE).

A GPT-2 MLP is ``c_fc`` (d -> 4d, a Conv1D: weight stored (in, out)), gelu_new, ``c_proj``
(4d -> d) and dropout, before the residual. The chosen blocks get the MLP replaced by the
MoE layer (every expert a copy of that MLP) followed by the same dropout.
"""

from typing import Any

from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from hypermoe.backbones.patching import MaskedMoE, RoutingContext, choose_layers, layer_activation
from hypermoe.backbones.sources import load_tokenizer, resolve_pretrained
from hypermoe.moe import FFN
from hypermoe.moe.build import stack_from_config


def load_gpt2(backbone: dict[str, Any]) -> tuple[GPT2LMHeadModel, Any]:
    """GPT-2 with its LM head (pretrained, or random from ``backbone['config']``) and its tokenizer."""
    tokenizer = load_tokenizer(backbone["tokenizer"], backbone.get("tokenizer_fallback"), "GPT2Tokenizer")
    if backbone["pretrained"] is not None:
        model = GPT2LMHeadModel.from_pretrained(resolve_pretrained(backbone["pretrained"]))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), **(backbone.get("config") or {})))
    return model, tokenizer


def patch_mlps(lm: GPT2LMHeadModel, model: dict, context: RoutingContext) -> tuple[nn.ModuleList, list[int]]:
    """Swap the MLP of the blocks named by ``model['moe_layers']`` for ``model['variant']``;
    returns the new layers and the indices of their blocks."""
    cfg = lm.config
    settings = dict(model)
    indices = choose_layers(settings.pop("moe_layers"), cfg.n_layer)
    blocks = [lm.transformer.h[i] for i in indices]
    d_ff = cfg.n_inner or 4 * cfg.n_embd
    shape = {"d_model": cfg.n_embd, "d_ff": d_ff, "activation": layer_activation(cfg.activation_function)}
    # Conv1D keeps its weight as (in, out); nn.Linear as (out, in)
    sources = [
        FFN.from_weights(
            mlp.c_fc.weight.t(), mlp.c_proj.weight.t(), shape["activation"], mlp.c_fc.bias, mlp.c_proj.bias
        )
        for mlp in (block.mlp for block in blocks)
    ]
    stack = stack_from_config(settings, len(blocks), **shape, bias=True, dense_ffns=sources)
    for block, layer in zip(blocks, stack, strict=True):
        block.mlp = nn.Sequential(MaskedMoE(layer, context), nn.Dropout(cfg.resid_pdrop))
    return stack, indices
