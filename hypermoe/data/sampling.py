"""Shuffling that depends on (seed, epoch) only, so a resumed run sees the same batches."""

import random
from collections.abc import Iterator, Sized

import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A permutation drawn from its own generator seeded with ``seed + epoch``; Lightning
    calls ``set_epoch`` before every epoch, as for DistributedSampler."""

    def __init__(self, data: Sized, seed: int):
        self.size, self.seed, self.epoch = len(data), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def seeded_subset(size: int, limit: int | None, seed: int) -> list[int] | None:
    """Indices of ``limit`` of ``size`` items drawn with ``seed`` (the same draw wherever the
    same items are subsampled), or None when there is nothing to cut."""
    if not limit or limit >= size:
        return None
    return random.Random(seed).sample(range(size), limit)


def validation_sampler(data: Sized) -> Sampler[int] | None:
    """Under DDP, a split of the validation set across processes without repeats (Lightning's
    default DistributedSampler pads ranks with repeated examples, which the metrics would
    count twice); None (in order) otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return UnrepeatedDistributedSampler(data, shuffle=False)
    return None
