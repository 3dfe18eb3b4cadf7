"""Task heads over encoder states: sequence / pair classification, regression, multiple
choice and span classification.

Shape legend: b batch (b * c rows for multiple choice with c choices), t tokens, d width,
s spans per example.
"""

import torch
from torch import Tensor, nn

KINDS = ("classification", "regression", "multiple_choice", "span")


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of hidden (b, t, d) over the positions where mask (b, t) or (b, s, t) is set."""
    if mask.dim() == 2:
        mask = mask.unsqueeze(1)  # (b, 1, t)
    weights = mask.to(hidden.dtype)
    pooled = weights @ hidden / weights.sum(-1, keepdim=True).clamp(min=1)  # (b, s, d)
    return pooled.squeeze(1) if pooled.shape[1] == 1 else pooled


class TaskHead(nn.Module):
    """Mean-pooled sequence (all-MiniLM-L6-v2 was trained with mean pooling), concatenated
    with the mean of every marked span, then dropout and one linear layer.

    classification / span: ``num_labels`` logits; regression: 1 score; multiple choice:
    one score per (question, choice) row, reshaped to (b, c).
    """

    def __init__(self, d_model: int, kind: str, num_labels: int, num_spans: int = 0, dropout: float = 0.1):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"head kind {kind!r} is not one of {list(KINDS)}")
        self.kind = kind
        outputs = 1 if kind in ("regression", "multiple_choice") else num_labels
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model * (1 + num_spans), outputs)

    def forward(
        self, hidden: Tensor, attention_mask: Tensor, span_masks: Tensor | None = None, num_choices: int | None = None
    ) -> Tensor:
        features = masked_mean(hidden, attention_mask)  # (b, d)
        if span_masks is not None:
            spans = masked_mean(hidden, span_masks)  # (b, s, d)
            features = torch.cat([features, spans.flatten(1)], dim=-1)
        logits = self.out(self.dropout(features))
        if self.kind == "multiple_choice":
            return logits.view(-1, num_choices)  # (b, c)
        return logits


def task_loss(logits: Tensor, labels: Tensor, kind: str) -> Tensor:
    if kind == "regression":
        return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)
