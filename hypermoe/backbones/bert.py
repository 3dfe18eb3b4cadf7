"""BERT-family encoders (all-MiniLM-L6-v2, a tiny random BERT) with MoE FFNs.

A BERT layer's FFN is ``intermediate`` (dense d -> f + GELU) then ``output.dense`` (f -> d)
before dropout, the residual and LayerNorm. The chosen layers get ``intermediate`` replaced by
the MoE layer (d -> d; its experts upcycled from the pretrained FFN) and ``output.dense`` by
an identity, so dropout, residual and LayerNorm stay the pretrained model's own.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import AutoTokenizer, BertConfig, BertModel

from hypermoe.backbones.sources import resolve_pretrained
from hypermoe.moe import FFN
from hypermoe.moe.build import stack_from_config

# transformers' activation names -> the layer library's
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "silu": "silu"}


class RoutingContext:
    """The padding mask of the batch the encoder last received, for the MoE layers inside it
    (BERT calls its FFN with hidden states only). Set by a forward pre-hook on the encoder,
    so every way of calling it counts, and kept until the next call, so gradient
    checkpointing recomputes a layer with the same mask."""

    attention_mask: Tensor | None = None

    @classmethod
    def attach(cls, encoder: nn.Module) -> "RoutingContext":
        context = cls()

        def remember_mask(module: nn.Module, args: tuple, kwargs: dict) -> None:
            context.attention_mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

        encoder.register_forward_pre_hook(remember_mask, with_kwargs=True)
        return context


class MaskedMoE(nn.Module):
    """Calls a MoE layer with the batch's padding mask from the shared context."""

    def __init__(self, layer: nn.Module, context: RoutingContext):
        super().__init__()
        self.layer, self.context = layer, context

    def forward(self, hidden: Tensor) -> Tensor:
        return self.layer(hidden, self.context.attention_mask)


def choose_layers(spec: str | Sequence[int], num_layers: int) -> list[int]:
    """``all``, ``every_2`` (1, 3, 5, ...: every second block, as Switch places its MoE
    layers) or an explicit list of block indices."""
    if spec == "all":
        return list(range(num_layers))
    if isinstance(spec, str) and spec.startswith("every_"):
        step = int(spec.removeprefix("every_"))
        return list(range(step - 1, num_layers, step))
    if isinstance(spec, str):
        raise ValueError(f"model.moe_layers={spec!r} is not 'all', 'every_<n>' or a list of block indices")
    layers = sorted(set(spec))
    if not layers or layers[0] < 0 or layers[-1] >= num_layers:
        raise ValueError(f"model.moe_layers={list(spec)} must be block indices in [0, {num_layers})")
    return layers


def load_bert(pretrained: str | None, config: dict | None, tokenizer: str) -> tuple[BertModel, object]:
    """The encoder (pretrained weights, or a random one built from ``config``) and its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(tokenizer))
    if pretrained is not None:
        encoder = BertModel.from_pretrained(resolve_pretrained(pretrained), add_pooling_layer=False)
    else:
        encoder = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **(config or {})), add_pooling_layer=False)
    return encoder, tokenizer


def patch_ffns(encoder: BertModel, model: dict, context: RoutingContext) -> tuple[nn.ModuleList, list[int]]:
    """Swap the FFN of the blocks named by ``model['moe_layers']`` for ``model['variant']``;
    returns the new layers and the indices of their blocks."""
    cfg = encoder.config
    if cfg.hidden_act not in _ACTIVATIONS:
        raise ValueError(f"backbone activation {cfg.hidden_act!r} is not one of {sorted(_ACTIVATIONS)}")
    settings = dict(model)
    indices = choose_layers(settings.pop("moe_layers"), cfg.num_hidden_layers)
    blocks = [encoder.encoder.layer[i] for i in indices]
    shape = {"d_model": cfg.hidden_size, "d_ff": cfg.intermediate_size, "activation": _ACTIVATIONS[cfg.hidden_act]}
    sources = [_dense_ffn(block, **shape) for block in blocks]
    stack = stack_from_config(settings, len(blocks), **shape, bias=True, dense_ffns=sources)
    for block, layer in zip(blocks, stack, strict=True):
        block.intermediate = MaskedMoE(layer, context)
        block.output.dense = nn.Identity()
    return stack, indices


@torch.no_grad()
def _dense_ffn(block: nn.Module, d_model: int, d_ff: int, activation: str) -> FFN:
    ffn = FFN(d_model, d_ff, activation, bias=True)
    ffn.fc_in.load_state_dict(block.intermediate.dense.state_dict())
    ffn.fc_out.load_state_dict(block.output.dense.state_dict())
    return ffn
