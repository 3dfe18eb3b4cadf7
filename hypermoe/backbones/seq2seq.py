"""Encoder-decoder with MoE layers: the ``net`` the text-to-text module trains."""

from typing import Any

from torch import Tensor, nn

from hypermoe.backbones.patching import RoutingContext, hyper_experts_kept
from hypermoe.backbones.switch import load_switch, patch_stack


class MoESeq2Seq(nn.Module):
    """``moe`` holds the encoder's MoE layers, then the decoder's; ``moe_names`` names each
    by stack and block (``encoder1``, ``decoder3``)."""

    def __init__(self, model: nn.Module, moe: nn.ModuleList, moe_names: list[str]):
        super().__init__()
        self.model, self.moe, self.moe_names = model, moe, moe_names

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, decoder_attention_mask: Tensor | None = None
    ) -> Tensor:
        """Teacher-forced logits (b, target length, vocab); ``labels`` use -100 for padding."""
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=self.model.prepare_decoder_input_ids_from_labels(labels),  # labels shifted right
            decoder_attention_mask=decoder_attention_mask,
            use_cache=False,
        ).logits

    def generate(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Any) -> Tensor:
        with hyper_experts_kept(self):  # the decoder runs once per new token, on the same parameters
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def build_seq2seq(backbone: dict[str, Any], model: dict[str, Any]) -> tuple[MoESeq2Seq, Any]:
    switch, tokenizer = load_switch(backbone)
    layers, names = [], []
    for stack_name in ("encoder", "decoder"):
        stack = getattr(switch, stack_name)
        stack_layers, blocks = patch_stack(stack, model, RoutingContext.attach(stack))
        layers.extend(stack_layers)
        names.extend(f"{stack_name}{block}" for block in blocks)
    return MoESeq2Seq(switch, nn.ModuleList(layers), names).train(), tokenizer
