"""GPT-2 with its block MLPs turned into MoE layers: upcycled (the paper's GPT-2 MoE) or,
for a model trained from scratch, with independently initialised experts.

A GPT-2 MLP is ``c_fc`` (d -> 4d, a Conv1D: weight stored (in, out)), gelu_new, ``c_proj``
(4d -> d) and dropout, before the residual. The chosen blocks get the MLP replaced by the
MoE layer followed by the same dropout. ``expert_init: upcycle`` makes every expert a copy of
that MLP (sparse upcycling: the MoE model starts as the dense one); ``independent`` draws each
expert (and a softmax router) afresh with GPT-2's own initialisation, as a Switch Transformer
trained from scratch.
"""

import math
from typing import Any

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from hypermoe.backbones.patching import MaskedMoE, RoutingContext, choose_layers, layer_activation
from hypermoe.backbones.sources import TOKENIZER_CLASSES, load_tokenizer, random_model, resolve_pretrained
from hypermoe.errors import ConfigError
from hypermoe.moe import FFN
from hypermoe.moe.build import stack_from_config
from hypermoe.moe.router import SwitchRouter

EXPERT_INITS = ("upcycle", "independent")


def load_gpt2(backbone: dict[str, Any], vocabulary: Any = None) -> tuple[GPT2LMHeadModel, Any]:
    """GPT-2 with its LM head (pretrained, or random from ``backbone['config']``) and its tokenizer:
    the backbone's, or ``vocabulary`` (a character corpus's) for a random model."""
    if vocabulary is None:
        tokenizer = load_tokenizer(
            backbone["tokenizer"], backbone.get("tokenizer_fallback"), TOKENIZER_CLASSES["causal_lm"]
        )
    elif backbone["pretrained"] is not None:
        raise ConfigError(
            f"backbone.pretrained={backbone['pretrained']!r} reads text with its own tokenizer, but the data is "
            "read by characters: pick a randomly initialised backbone (backbone=nanogpt_char or gpt2_tiny)"
        )
    else:
        tokenizer = vocabulary
    if backbone["pretrained"] is not None:
        model = GPT2LMHeadModel.from_pretrained(resolve_pretrained(backbone["pretrained"]))
    else:
        # a character vocabulary has no special tokens (GPT-2's config names its own end-of-text id)
        special = {} if vocabulary is None else {"bos_token_id": None, "eos_token_id": None}
        from_tokenizer = {"vocab_size": len(tokenizer), **special}
        model = random_model(GPT2LMHeadModel, GPT2Config, backbone.get("config") or {}, from_tokenizer)
    return model, tokenizer


def patch_mlps(
    lm: GPT2LMHeadModel, model: dict, context: RoutingContext, expert_init: str = "upcycle"
) -> tuple[nn.ModuleList, list[int]]:
    """Swap the MLP of the blocks named by ``model['moe_layers']`` for ``model['variant']``;
    returns the new layers and the indices of their blocks."""
    if expert_init not in EXPERT_INITS:
        raise ConfigError(f"backbone.expert_init={expert_init!r} is not one of {list(EXPERT_INITS)}")
    cfg = lm.config
    settings = dict(model)
    indices = choose_layers(settings.pop("moe_layers"), cfg.n_layer)
    blocks = [lm.transformer.h[i] for i in indices]
    d_ff = cfg.n_inner or 4 * cfg.n_embd
    shape = {"d_model": cfg.n_embd, "d_ff": d_ff, "activation": layer_activation(cfg.activation_function)}
    if expert_init == "upcycle":  # Conv1D keeps its weight as (in, out); nn.Linear as (out, in)
        sources = [
            FFN.from_weights(
                mlp.c_fc.weight.t(), mlp.c_proj.weight.t(), shape["activation"], mlp.c_fc.bias, mlp.c_proj.bias
            )
            for mlp in (block.mlp for block in blocks)
        ]
        stack = stack_from_config(settings, len(blocks), **shape, bias=True, dense_ffns=sources)
    else:
        stack = stack_from_config(settings, len(blocks), **shape, bias=True)
        init_like_gpt2(stack, cfg)
    for block, layer in zip(blocks, stack, strict=True):
        block.mlp = nn.Sequential(MaskedMoE(layer, context), nn.Dropout(cfg.resid_pdrop))
    return stack, indices


@torch.no_grad()
def init_like_gpt2(stack: nn.Module, cfg: GPT2Config) -> None:
    """Every FFN in ``stack`` (each expert, or the plain FFN) drawn as GPT-2 draws its MLPs:
    weights N(0, initializer_range), the output projection's scaled by 1 / sqrt(2 n_layer)
    (GPT-2's residual-projection rule, as in transformers and nanoGPT), biases zero. Softmax
    routers too are drawn N(0, initializer_range), a small scale as the Switch Transformer
    recommends for stable training from scratch (its truncated normal of std sqrt(0.1 / d) is
    0.028 at d = 128), so routing starts near uniform."""
    for module in stack.modules():
        if isinstance(module, FFN):
            nn.init.normal_(module.fc_in.weight, std=cfg.initializer_range)
            nn.init.normal_(module.fc_out.weight, std=cfg.initializer_range / math.sqrt(2 * cfg.n_layer))
            for layer in (module.fc_in, module.fc_out):
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        elif isinstance(module, SwitchRouter):
            nn.init.normal_(module.weight, std=cfg.initializer_range)
