"""Encoder with MoE FFNs + task head: the ``net`` a LightningModule trains."""

from typing import Any

from torch import Tensor, nn

from hypermoe.backbones.bert import load_bert, patch_ffns
from hypermoe.backbones.heads import TaskHead
from hypermoe.backbones.patching import RoutingContext


class MoEClassifier(nn.Module):
    """``moe[i]`` is the MoE layer of encoder block ``moe_blocks[i]``."""

    def __init__(self, encoder: nn.Module, moe: nn.ModuleList, moe_blocks: list[int], head: TaskHead):
        super().__init__()
        self.encoder, self.moe, self.moe_blocks, self.head = encoder, moe, moe_blocks, head

    @property
    def moe_names(self) -> list[str]:
        return [f"layer{block}" for block in self.moe_blocks]

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        span_masks: Tensor | None = None,
        num_choices: int | None = None,
    ) -> Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.head(hidden, attention_mask, span_masks, num_choices)


def build_classifier(
    backbone: dict[str, Any], model: dict[str, Any], kind: str, num_labels: int, num_spans: int
) -> tuple[MoEClassifier, Any]:
    """The network for one task, and the tokenizer its inputs need."""
    encoder, tokenizer = load_bert(
        backbone["pretrained"], backbone.get("config"), backbone["tokenizer"], backbone.get("tokenizer_fallback")
    )
    moe, blocks = patch_ffns(encoder, model, RoutingContext.attach(encoder))
    head = TaskHead(encoder.config.hidden_size, kind, num_labels, num_spans, backbone.get("head_dropout", 0.1))
    # from_pretrained returns the encoder in eval mode, and Lightning keeps each module's mode
    return MoEClassifier(encoder, moe, blocks, head).train(), tokenizer
