"""LightningDataModule for one GLUE / SuperGLUE task (or the synthetic one)."""

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Sampler

from hypermoe.data.encoding import collate, encode_all
from hypermoe.data.examples import Example
from hypermoe.data.sampling import EpochShuffleSampler, ResumableDataLoader, seeded_subset, validation_sampler
from hypermoe.data.sources import load_split
from hypermoe.data.synthetic import SYNTHETIC, synthetic_split
from hypermoe.data.tasks import Task, get_task

log = logging.getLogger(__name__)


class TaskDataModule(pl.LightningDataModule):
    """Reads, tokenizes and batches one task. ``max_train_examples`` subsamples the training
    set (seeded) for CPU-scale runs; the validation set is always whole."""

    def __init__(
        self,
        benchmark: str,
        task: str,
        data_dir: str,
        max_length: int,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int = 0,
        max_train_examples: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.task = self.resolve_task(benchmark, task)
        self.data_dir = Path(data_dir)
        self.max_length, self.batch_size, self.eval_batch_size = max_length, batch_size, eval_batch_size
        self.num_workers, self.max_train_examples, self.seed = num_workers, max_train_examples, seed
        self.tokenizer: Any = None
        self.features: dict[str, list[dict]] = {}
        self.groups: dict[str, int] = {}

    @staticmethod
    def resolve_task(benchmark: str, name: str) -> Task:
        if benchmark != "synthetic":
            return get_task(benchmark, name)
        if name != SYNTHETIC.name:
            raise ValueError(f"data.task={name!r} is not a synthetic task; choose one of {[SYNTHETIC.name]}")
        return SYNTHETIC

    def set_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(features, pad_token_id=self.tokenizer.pad_token_id)

    def _examples(self, split: str) -> list[Example]:
        if self.task is SYNTHETIC:
            examples = synthetic_split(split, self.seed)
        else:
            examples = load_split(self.task, split, self.data_dir)
        keep = seeded_subset(len(examples), self.max_train_examples, self.seed) if split == "train" else None
        if keep is not None:
            examples = [examples[i] for i in keep]
            log.info("%s train: subsampled to %d rows (seed %d)", self.task.name, len(examples), self.seed)
        return examples

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("call set_tokenizer(tokenizer) before setup: the backbone decides the tokenizer")
        # re-testing a checkpoint (stage "validate") needs no training features
        for split in ("validation",) if stage == "validate" else ("train", "validation"):
            if split not in self.features:
                self.features[split] = self._encode(self._examples(split))

    def _encode(self, examples: list[Example]) -> list[dict]:
        features = encode_all(examples, self.tokenizer, self.max_length)
        for feature in features:  # MultiRC exact match groups, as integers the metric can hold
            if feature["group"] is not None:
                feature["group"] = self.groups.setdefault(feature["group"], len(self.groups))
        return features

    def examples(self, split: str) -> list[Example]:
        """Every example of ``split`` as read (a test split: unlabeled, each with its row id)."""
        return self._examples(split)

    def prediction_dataloader(self, examples: list[Example]) -> DataLoader:
        """``examples`` tokenized and batched in their order, for predictions row by row."""
        return self._loader_of(self._encode(examples), self.eval_batch_size, None)

    def _loader(self, split: str, batch_size: int, sampler: Sampler | None) -> DataLoader:
        return self._loader_of(self.features[split], batch_size, sampler)

    def _loader_of(self, features: list[dict], batch_size: int, sampler: Sampler | None) -> DataLoader:
        return ResumableDataLoader(
            features,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            # its own generator: creating an iterator then draws no number from the global
            # stream, which the training steps' dropout uses
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, EpochShuffleSampler(self.features["train"], self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.eval_batch_size, validation_sampler(self.features["validation"]))
