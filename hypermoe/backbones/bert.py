"""BERT-family encoders (all-MiniLM-L6-v2, a tiny random BERT) with MoE FFNs.

A BERT layer's FFN is ``intermediate`` (dense d -> f + GELU) then ``output.dense`` (f -> d)
before dropout, the residual and LayerNorm. The chosen layers get ``intermediate`` replaced by
the MoE layer (d -> d; its experts upcycled from the pretrained FFN) and ``output.dense`` by
an identity, so dropout, residual and LayerNorm stay the pretrained model's own.
"""

from typing import ClassVar

from torch import nn
from transformers import BertConfig, BertModel

from hypermoe.backbones.patching import MaskedMoE, RoutingContext, choose_layers, layer_activation
from hypermoe.backbones.sources import TOKENIZER_CLASSES, load_tokenizer, random_model, resolve_pretrained
from hypermoe.moe import FFN
from hypermoe.moe.build import stack_from_config


class BertWithoutPooler(BertModel):
    """A BertModel built without its pooler (``add_pooling_layer=False``: the task heads pool the token
    states themselves), whose checkpoint's pooler weights are left out as expected rather than listed
    in transformers' load report as unexpected keys at every run."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^pooler\."]


def load_bert(
    pretrained: str | None, config: dict | None, tokenizer: str, tokenizer_fallback: str | None = None
) -> tuple[BertModel, object]:
    """The encoder (pretrained weights, or a random one built from ``config``) and its tokenizer
    (from ``tokenizer_fallback``, a folder of the same files, where ``tokenizer`` cannot be reached)."""
    tokenizer = load_tokenizer(tokenizer, tokenizer_fallback, TOKENIZER_CLASSES["encoder"])
    if pretrained is not None:
        encoder = BertWithoutPooler.from_pretrained(resolve_pretrained(pretrained), add_pooling_layer=False)
    else:
        from_tokenizer = {"vocab_size": tokenizer.vocab_size}
        encoder = random_model(BertModel, BertConfig, config or {}, from_tokenizer, add_pooling_layer=False)
    return encoder, tokenizer


def patch_ffns(encoder: BertModel, model: dict, context: RoutingContext) -> tuple[nn.ModuleList, list[int]]:
    """Swap the FFN of the blocks named by ``model['moe_layers']`` for ``model['variant']``;
    returns the new layers and the indices of their blocks."""
    cfg = encoder.config
    settings = dict(model)
    indices = choose_layers(settings.pop("moe_layers"), cfg.num_hidden_layers)
    blocks = [encoder.encoder.layer[i] for i in indices]
    shape = {"d_model": cfg.hidden_size, "d_ff": cfg.intermediate_size, "activation": layer_activation(cfg.hidden_act)}
    sources = [
        FFN.from_weights(
            block.intermediate.dense.weight,
            block.output.dense.weight,
            shape["activation"],
            block.intermediate.dense.bias,
            block.output.dense.bias,
        )
        for block in blocks
    ]
    stack = stack_from_config(settings, len(blocks), **shape, bias=True, dense_ffns=sources)
    for block, layer in zip(blocks, stack, strict=True):
        block.intermediate = MaskedMoE(layer, context)
        block.output.dense = nn.Identity()
    return stack, indices
