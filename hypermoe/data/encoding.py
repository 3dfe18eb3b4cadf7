"""Examples -> token features -> padded batches.

Shape legend: b examples, c choices, t tokens, s spans.
"""

import logging
from typing import Any

import torch
from torch import Tensor

from hypermoe.data.examples import Example, Span

log = logging.getLogger(__name__)


def encode_all(examples: list[Example], tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """Token ids of every example (one row per choice for multiple choice), its label, and
    for every span the positions of the tokens that overlap its characters. One batched
    tokenizer call for all rows: the fast tokenizer's own parallelism does the work."""
    pairs = [(ex.text_a, choice) for ex in examples for choice in ex.choices or (ex.text_b,)]
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    with_spans = any(ex.spans for ex in examples)
    encoded = tokenizer(
        firsts,
        None if all(b is None for b in seconds) else seconds,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=with_spans,
    )
    log_truncated(encoded, "rows", f"max_length={max_length}")  # the longest segment is cut first
    features, row, cut_spans = [], 0, []
    for ex in examples:
        count = len(ex.choices) or 1
        rows = [
            {key: encoded[key][i] for key in ("input_ids", "token_type_ids", "attention_mask") if key in encoded}
            for i in range(row, row + count)
        ]
        spans = [_span_positions(encoded, row, span) for span in ex.spans]
        cut_spans += [len(features)] * sum(not positions for positions in spans)
        features.append({"rows": rows, "label": ex.label, "spans": spans, "group": ex.group})
        row += count
    if cut_spans:
        log.warning(
            "%d of %d spans lie wholly in text cut off by max_length=%d (first in example %d): the span head "
            "pools no token for them (a zero vector); raise data.max_length to keep them",
            len(cut_spans),
            sum(len(ex.spans) for ex in examples),
            max_length,
            cut_spans[0],
        )
    return features


def log_truncated(encoded: Any, what: str, limit: str) -> None:
    """Log how many rows the tokenizer cut to ``limit``. A row's length cannot tell: one that
    fits exactly has that length too. The fast tokenizer keeps what it cut from row i in
    ``encodings[i].overflowing``, empty where nothing was cut."""
    cut = sum(bool(encoding.overflowing) for encoding in encoded.encodings)
    if cut:
        log.info("%d of %d %s were longer than %s and were truncated", cut, len(encoded.encodings), what, limit)


def _span_positions(encoded: Any, row: int, span: Span) -> list[int]:
    offsets, segments = encoded["offset_mapping"][row], encoded.sequence_ids(row)
    return [
        i
        for i, ((start, end), segment) in enumerate(zip(offsets, segments, strict=True))
        if segment == span.segment and start < span.end and end > span.start
    ]


def collate(features: list[dict[str, Any]], pad_token_id: int) -> dict[str, Tensor | int]:
    """Pad to the longest row of the batch; multiple-choice rows are flattened to (b * c, t)."""
    rows = [row for feature in features for row in feature["rows"]]
    length = max(len(row["input_ids"]) for row in rows)

    def pad(key: str, value: int) -> Tensor:
        return torch.tensor([row[key] + [value] * (length - len(row[key])) for row in rows])

    batch: dict[str, Tensor | int] = {
        "input_ids": pad("input_ids", pad_token_id),
        "attention_mask": pad("attention_mask", 0),
    }
    if "token_type_ids" in rows[0]:
        batch["token_type_ids"] = pad("token_type_ids", 0)
    num_choices = len(features[0]["rows"])
    if num_choices > 1:
        batch["num_choices"] = num_choices
    if features[0].get("spans"):
        masks = torch.zeros(len(features), len(features[0]["spans"]), length, dtype=torch.bool)  # (b, s, t)
        for b, feature in enumerate(features):
            for s, positions in enumerate(feature["spans"]):
                masks[b, s, positions] = True
        batch["span_masks"] = masks
    if features[0]["group"] is not None:
        batch["groups"] = torch.tensor([feature["group"] for feature in features])
    labels = [feature["label"] for feature in features]
    if all(label is not None for label in labels):
        batch["labels"] = torch.tensor(labels)
    return batch
