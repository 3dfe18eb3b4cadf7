"""Decoder-only language model with MoE MLPs: the ``net`` the language-modelling module trains."""

from typing import Any

from torch import Tensor, nn

from hypermoe.backbones.gpt2 import load_gpt2, patch_mlps
from hypermoe.backbones.patching import RoutingContext


class MoECausalLM(nn.Module):
    """``moe[i]`` is the MoE layer of block ``moe_blocks[i]``; returns next-token logits."""

    def __init__(self, lm: nn.Module, moe: nn.ModuleList, moe_blocks: list[int]):
        super().__init__()
        self.lm, self.moe, self.moe_blocks = lm, moe, moe_blocks

    @property
    def moe_names(self) -> list[str]:
        return [f"layer{block}" for block in self.moe_blocks]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def build_causal_lm(backbone: dict[str, Any], model: dict[str, Any], vocabulary: Any = None) -> tuple[MoECausalLM, Any]:
    """The patched language model and its tokenizer (``vocabulary`` for a character corpus)."""
    lm, tokenizer = load_gpt2(backbone, vocabulary)
    expert_init = backbone.get("expert_init", "upcycle")
    moe, blocks = patch_mlps(lm, model, RoutingContext.attach(lm.transformer), expert_init)
    return MoECausalLM(lm, moe, blocks).train(), tokenizer
