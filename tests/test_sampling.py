"""The training order depends on (seed, epoch) only, and no two (seed, epoch) share one."""

import itertools

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
