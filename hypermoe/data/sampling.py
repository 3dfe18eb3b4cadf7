"""Shuffling that depends on (seed, epoch) only, so a resumed run sees the same batches."""

import random
from collections.abc import Iterator, Sized

import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A permutation drawn from its own generator seeded from (seed, epoch); Lightning calls
    ``set_epoch`` before every epoch, as for DistributedSampler. (Not ``seed + epoch``: seed s's
    second epoch would be seed s + 1's first, and consecutive seeds would share their orders.)"""

    def __init__(self, data: Sized, seed: int):
        self.size, self.seed, self.epoch = len(data), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)  # as BatchReseed mixes them
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class ResumableDataLoader(DataLoader):
    """A DataLoader that a run resumed mid-epoch continues where it stopped.

    Lightning stores ``state_dict()`` (the batches this pass has yielded) in every checkpoint;
    ``load_state_dict`` before iterating makes the next pass skip them, so with the epoch's
    sampler order (seed, epoch) the resumed run sees exactly the batches the original would
    have (``MoELitModule.on_train_start`` calls it). Lightning fetches batches of a loader with
    a length one at a time, so "yielded" is "trained on" when a checkpoint is taken. Skipped
    batches are still loaded and collated, then dropped.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches_yielded = 0  # by the pass in progress
        self.resume_after = 0  # batches the next pass skips

    def __iter__(self) -> Iterator:
        # a generator: nothing runs (the sampler's epoch is not read) until the first batch is asked for
        skip, self.resume_after = self.resume_after, 0
        self.batches_yielded = 0
        for batch in super().__iter__():
            self.batches_yielded += 1
            if self.batches_yielded > skip:
                yield batch

    def state_dict(self) -> dict[str, int]:
        return {"batches_yielded": self.batches_yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_after = state["batches_yielded"]


def seeded_subset(size: int, limit: int | None, seed: int) -> list[int] | None:
    """Indices of ``limit`` of ``size`` items drawn with ``seed`` (the same draw wherever the
    same items are subsampled), or None when there is nothing to cut (``limit`` None or >= size)."""
    if limit is not None and limit < 1:
        raise ValueError(f"a subsample of {limit} items keeps nothing: ask for >= 1, or None for all")
    if limit is None or limit >= size:
        return None
    return random.Random(seed).sample(range(size), limit)


def validation_sampler(data: Sized) -> Sampler[int] | None:
    """Under DDP, a split of the validation set across processes without repeats (Lightning's
    default DistributedSampler pads ranks with repeated examples, which the metrics would
    count twice); None (in order) otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return UnrepeatedDistributedSampler(data, shuffle=False)
    return None
