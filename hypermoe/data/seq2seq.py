"""LightningDataModule for text-to-text training: GLUE / SuperGLUE tasks formatted as the
paper's code formats them, and the free-text tasks (SQuAD, ReCoRD, XSum, CNN/DailyMail).

Batches carry, beside the token tensors, what generation-based evaluation scores against:
``class_label`` (class index or score) and ``groups`` for GLUE / SuperGLUE, ``answers`` (every
acceptable answer) for the free-text tasks.
"""

import logging
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from hypermoe.data.datamodule import TaskDataModule
from hypermoe.data.encoding import log_truncated
from hypermoe.data.examples import Example
from hypermoe.data.generative import GenerativeTask, get_generative_task, load_pairs
from hypermoe.data.tasks import Task, get_task
from hypermoe.data.text2text import SOURCE_FIELDS, label_targets, most_frequent_target, to_text_pair
from hypermoe.data.text_pairs import TextPair

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label positions the loss skips (padding)


class Seq2SeqDataModule(TaskDataModule):
    """Text pairs of one task, tokenized; the same arguments as TaskDataModule plus
    ``max_target_length`` (None: the task's own for free-text tasks, else the longest
    tokenized label string, so no label is ever cut) and ``num_beams``, the beam width of
    generation-based evaluation (the paper: 6 for summarization, greedy elsewhere)."""

    def __init__(self, *args: Any, max_target_length: int | None = None, num_beams: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_target_length = max_target_length or getattr(self.task, "max_target_length", None)
        self.num_beams = num_beams
        self.majority_target: str | None = None  # a labelled task's, once its training pairs are read

    @staticmethod
    def resolve_task(benchmark: str, name: str) -> Task | GenerativeTask:
        return get_generative_task(name) if benchmark == "generative" else get_task(benchmark, name)

    @property
    def generation_kwargs(self) -> dict[str, Any]:
        """How validation generates: up to the target length (known after setup), with beams."""
        return {"max_new_tokens": self.max_target_length, "num_beams": self.num_beams}

    def prediction_dataloader(self, examples: list[Example]) -> DataLoader:
        """``examples`` as text pairs, tokenized and batched in their order; generation then goes up
        to the longest target any label gives, where no training set has set it."""
        if self.max_target_length is None:
            self.max_target_length = max(
                len(ids) for ids in self.tokenizer(text_target=label_targets(self.task))["input_ids"]
            )
        pairs = [to_text_pair(self.task, example) for example in examples]
        return self._loader_of(self._encode("test", pairs), self.eval_batch_size, None)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_text(features, pad_token_id=self.tokenizer.pad_token_id)

    def _pairs(self, split: str) -> list[TextPair]:
        if isinstance(self.task, GenerativeTask):
            limit = self.max_train_examples if split == "train" else None
            return load_pairs(self.task.name, split, self.data_dir, max_examples=limit, seed=self.seed)
        return [to_text_pair(self.task, example) for example in self._examples(split)]

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("call set_tokenizer(tokenizer) before setup: the backbone decides the tokenizer")
        splits = ("validation",) if stage == "validate" else ("train", "validation")
        pairs = {split: self._pairs(split) for split in splits if split not in self.features}
        if self.max_target_length is None:
            targets = [pair.target for split_pairs in pairs.values() for pair in split_pairs]
            self.max_target_length = max(len(ids) for ids in self.tokenizer(text_target=targets)["input_ids"])
        if "train" in pairs and isinstance(self.task, Task):
            self.majority_target = most_frequent_target(pairs["train"])
        for split, split_pairs in pairs.items():
            self.features[split] = self._encode(split, split_pairs)

    def _encode(self, split: str, pairs: list[TextPair]) -> list[dict[str, Any]]:
        texts = [pair.source for pair in pairs]
        sources = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        targets = self.tokenizer(
            text_target=[pair.target for pair in pairs], truncation=True, max_length=self.max_target_length
        )
        log_truncated(sources, f"{self.task.name} {split} sources", f"max_length={self.max_length}")
        self._warn_of_lost_fields(split, sources, texts)
        log_truncated(targets, f"{self.task.name} {split} targets", f"max_target_length={self.max_target_length}")
        return [
            {
                "input_ids": source,
                "labels": target,
                "class_label": pair.label,
                "group": None if pair.group is None else self.groups.setdefault(pair.group, len(self.groups)),
                "answers": pair.answers or (pair.target,),
            }
            for source, target, pair in zip(sources["input_ids"], targets["input_ids"], pairs, strict=True)
        ]

    def _warn_of_lost_fields(self, split: str, sources: Any, texts: list[str]) -> None:
        """Sources are cut at their end, as the reference cuts them: where that leaves none of the
        last field (RTE's hypothesis, BoolQ's passage), the model is asked without it. Counted, with
        the first such row, as a warning."""
        fields = SOURCE_FIELDS.get(getattr(self.task, "qualified_name", ""), ())
        if len(fields) < 2:
            return
        lost = sources_without_their_last_field(sources, texts, fields[-1])
        if lost:
            log.warning(
                "%d of %d %s %s sources keep none of their last field %r within max_length=%d (first: row %d)",
                len(lost), len(texts), self.task.name, split, fields[-1], self.max_length, lost[0],
            )  # fmt: skip


def sources_without_their_last_field(sources: Any, texts: list[str], field: str) -> list[int]:
    """The rows of ``texts`` (``<prefix> ... <field>: <value>``) whose truncated encoding ``sources``
    (a fast tokenizer's, whose encodings keep each token's character offsets) keeps no character of
    ``field``'s value."""
    marker = f" {field}: "
    lost = []
    for row, (text, encoding) in enumerate(zip(texts, sources.encodings, strict=True)):
        if encoding.overflowing:
            value_start = text.rfind(marker) + len(marker)
            kept_end = max(end for _, end in encoding.offsets)  # special tokens: (0, 0)
            if kept_end <= value_start:
                lost.append(row)
    return lost


def _pad(rows: list[list[int]], value: int) -> Tensor:
    length = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (length - len(row)) for row in rows])


def collate_text(features: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Pad sources with the pad token and targets with IGNORE_INDEX, each to its longest row."""
    sources = [feature["input_ids"] for feature in features]
    labels = _pad([feature["labels"] for feature in features], IGNORE_INDEX)
    batch: dict[str, Any] = {
        "input_ids": _pad(sources, pad_token_id),
        "attention_mask": _pad([[1] * len(row) for row in sources], 0),
        "labels": labels,
        "decoder_attention_mask": (labels != IGNORE_INDEX).long(),
        "answers": [feature["answers"] for feature in features],
    }
    if all(feature["class_label"] is not None for feature in features):
        batch["class_label"] = torch.tensor([feature["class_label"] for feature in features])
    if features[0]["group"] is not None:
        batch["groups"] = torch.tensor([feature["group"] for feature in features])
    return batch
