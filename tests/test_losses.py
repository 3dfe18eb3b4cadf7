"""Aux losses against hand-computed values."""

import math

import pytest
import torch

from hypermoe.moe import losses


def test_balance_loss_is_one_for_uniform_routing_and_larger_otherwise():
    n, e = 8, 4
    uniform_probs = torch.full((n, e), 1 / e)
    round_robin = torch.arange(n).remainder(e).unsqueeze(-1)
    valid = torch.ones(n, dtype=torch.bool)
    assert losses.load_balancing_loss(uniform_probs, round_robin, valid, 1).item() == pytest.approx(1.0)
    collapsed = torch.zeros(n, 1, dtype=torch.long)
    peaked = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).expand(n, e)
    assert losses.load_balancing_loss(peaked, collapsed, valid, 1).item() == pytest.approx(4 * 0.7)


def test_balance_loss_hand_computed_and_padding_ignored():
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.0, 1.0]])
    chosen = torch.tensor([[0], [0], [1]])
    valid = torch.tensor([True, True, False])
    # f = [1, 0], P = [0.65, 0.35]  ->  2 * (1 * 0.65 + 0 * 0.35) = 1.3
    assert losses.load_balancing_loss(probs, chosen, valid, 1).item() == pytest.approx(1.3)


def test_balance_loss_top2_counts_each_slot():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
    chosen = torch.tensor([[0, 1], [1, 2]])
    # f = [1, 2, 1] / 4, P = [0.35, 0.4, 0.25]  ->  3 * (0.35 + 0.8 + 0.25) / 4 = 1.05
    all_valid = torch.ones(2, dtype=torch.bool)
    assert losses.load_balancing_loss(probs, chosen, all_valid, 1).item() == pytest.approx(1.05)


# Two sequences of two tokens, two experts, top-1.
PROBS = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
CHOSEN = torch.tensor([[0], [0], [1], [0]])


def test_balance_loss_per_sequence_and_over_the_batch_hand_computed():
    valid = torch.ones(4, dtype=torch.bool)
    # sequence 0: f = [1, 0], P = [0.75, 0.25] -> 2 * 0.75 = 1.5; sequence 1: f = [0.5, 0.5],
    # P = [0.45, 0.55] -> 2 * (0.225 + 0.275) = 1.0; their mean 1.25
    assert losses.load_balancing_loss(PROBS, CHOSEN, valid, 2).item() == pytest.approx(1.25)
    # the batch as one group: f = [0.75, 0.25], P = [0.6, 0.4] -> 2 * (0.45 + 0.1) = 1.1
    assert losses.load_balancing_loss(PROBS, CHOSEN, valid, 1).item() == pytest.approx(1.1)


def test_balance_loss_groups_count_their_valid_tokens_only():
    # sequence 1 keeps its first token: f = [0, 1], P = [0.2, 0.8] -> 1.6; with sequence 0's 1.5: 1.55
    valid = torch.tensor([True, True, True, False])
    assert losses.load_balancing_loss(PROBS, CHOSEN, valid, 2).item() == pytest.approx(1.55)
    # a sequence of padding alone is left out of the mean, not counted as 0
    valid = torch.tensor([True, True, False, False])
    assert losses.load_balancing_loss(PROBS, CHOSEN, valid, 2).item() == pytest.approx(1.5)
    assert losses.load_balancing_loss(PROBS, CHOSEN, torch.zeros(4, dtype=torch.bool), 2).item() == 0.0
    with pytest.raises(ValueError, match="4 tokens do not split into num_groups=3"):
        losses.load_balancing_loss(PROBS, CHOSEN, valid, 3)


def test_z_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0], [50.0, 50.0]])
    valid = torch.tensor([True, True, False])
    lse = [math.log(2), math.log(math.e + math.e**2)]
    expected = (lse[0] ** 2 + lse[1] ** 2) / 2
    assert losses.router_z_loss(logits, valid).item() == pytest.approx(expected, rel=1e-6)


def test_cv_squared_hand_computed():
    assert losses.cv_squared(torch.tensor([1.0, 2.0, 3.0])).item() == pytest.approx(0.25)  # var 1, mean 2
    assert losses.cv_squared(torch.tensor([2.0, 2.0, 2.0])).item() == 0.0
    assert losses.cv_squared(torch.tensor([5.0])).item() == 0.0
    assert losses.cv_squared(torch.zeros(4)).item() == 0.0


def test_importance_and_hard_load():
    gates = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.9, 0.1], [1.0, 0.0, 0.0]])
    valid = torch.tensor([True, True, False])
    torch.testing.assert_close(losses.importance(gates, valid), torch.tensor([0.6, 1.3, 0.1]))
    torch.testing.assert_close(losses.hard_load(gates, valid), torch.tensor([1.0, 2.0, 1.0]))


def test_smooth_load_hand_computed():
    def phi(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    clean = torch.tensor([[1.0, 0.0, 0.0]])
    noisy = torch.tensor([[1.2, 0.1, -0.3]])
    std = torch.tensor([[1.0, 2.0, 0.5]])
    top = noisy.topk(2, dim=-1).values
    load = losses.smooth_load(clean, noisy, std, top, top_k=1, valid=torch.tensor([True]))
    # expert 0 is in the top 1 and must beat the 2nd largest (0.1); the others must beat 1.2
    expected = [phi((1.0 - 0.1) / 1.0), phi((0.0 - 1.2) / 2.0), phi((0.0 - 1.2) / 0.5)]
    torch.testing.assert_close(load, torch.tensor(expected))
