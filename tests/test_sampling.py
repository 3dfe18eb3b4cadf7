"""The training order depends on (seed, epoch) only, and no two (seed, epoch) share one; each
training batch's random stream on (seed, epoch, batch)."""

import itertools
import random
from types import SimpleNamespace

import numpy as np
import torch

from hypermoe.callbacks.batch_seed import BatchReseed
from hypermoe.data.sampling import EpochShuffleSampler


def _order(seed: int, epoch: int) -> list[int]:
    sampler = EpochShuffleSampler(range(50), seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_an_epochs_order_is_fixed_by_seed_and_epoch():
    assert _order(3, 2) == _order(3, 2) and sorted(_order(3, 2)) == list(range(50))


def test_consecutive_seeds_do_not_replay_each_others_epochs():
    """With seed + epoch, seed 1's second epoch was seed 2's first: seeds 1-3 over 10 epochs shared 9 of 10 orders."""
    orders = {(seed, epoch): tuple(_order(seed, epoch)) for seed, epoch in itertools.product(range(1, 4), range(10))}
    assert len(set(orders.values())) == len(orders)


def _reseeded_draw(seed: int, epoch: int, batch: int) -> tuple[float, float, float]:
    """A draw from each generator a batch may use: torch's, numpy's and Python's."""
    trainer = SimpleNamespace(current_epoch=epoch)
    BatchReseed(seed).on_train_batch_start(trainer, None, None, batch)
    return torch.rand(()).item(), np.random.rand(), random.random()


def test_every_seed_a_run_takes_reseeds_its_batches():
    """The batch stream mixes (seed, epoch, batch) beyond 64 bits from seed 1.8e8 on; torch's seed
    is that value modulo 2**64, which leaves the streams of smaller seeds as they were."""
    largest = 2**32 - 1  # what check_run_settings lets through
    again, next_batch = _reseeded_draw(largest, 3, 7), _reseeded_draw(largest, 3, 8)
    assert _reseeded_draw(largest, 3, 7) == again and all(a != b for a, b in zip(again, next_batch, strict=True))
    torch.manual_seed((42 * 100_003 + 3) * 1_000_003 + 7)
    unreduced = torch.rand(()).item()
    assert _reseeded_draw(42, 3, 7)[0] == unreduced
