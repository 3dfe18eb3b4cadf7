"""Aux losses are collected from every MoE layer and weighted in one place."""

import pytest
import torch
from conftest import D_MODEL

from hypermoe.moe import TopKSettings, build_moe_stack, moe_layers, sum_aux_losses, weighted_aux_loss


def test_sum_and_weight_aux_losses_over_a_stack(shape):
    stack = build_moe_stack(TopKSettings(num_experts=4, top_k=1), 3, **shape)
    model = torch.nn.Sequential(torch.nn.Linear(D_MODEL, D_MODEL), *stack)
    x = torch.randn(2, 5, D_MODEL)
    for layer in model:
        x = layer(x)
    assert [name for name, _ in moe_layers(model)] == ["1", "2", "3"]  # not the expert FFNs inside
    assert [name for name, _ in moe_layers(stack[0])] == [""]
    totals = sum_aux_losses(model)
    assert set(totals) == {"balance", "z"}
    torch.testing.assert_close(totals["balance"], sum(layer.aux_losses["balance"] for layer in stack))
    weighted = weighted_aux_loss(totals, {"balance": 1e-2, "z": 1e-3, "cv_load": 1.0})
    torch.testing.assert_close(weighted, 1e-2 * totals["balance"] + 1e-3 * totals["z"])
    weighted.backward()
    assert stack[0].router.weight.grad.abs().sum() > 0


def test_a_recorded_loss_without_coefficient_is_an_error(shape):
    layer = build_moe_stack(TopKSettings(num_experts=4, top_k=1, gating="noisy"), 1, **shape)[0]
    layer(torch.randn(1, 4, D_MODEL))
    with pytest.raises(KeyError, match=r"no coefficient for aux losses \['cv_importance', 'cv_load'\]"):
        weighted_aux_loss(layer.aux_losses, {"balance": 1e-2, "z": 1e-3})


def test_aux_losses_are_overwritten_each_forward(shape):
    layer = build_moe_stack(TopKSettings(num_experts=4, top_k=1), 1, **shape)[0]
    layer(torch.randn(1, 4, D_MODEL))
    first = layer.aux_losses["z"]
    layer(torch.randn(1, 4, D_MODEL) * 10)
    assert set(layer.aux_losses) == {"balance", "z"} and not torch.equal(first, layer.aux_losses["z"])


def test_a_training_layer_whose_aux_losses_carry_no_gradient_is_an_error(shape):
    layer = build_moe_stack(TopKSettings(num_experts=4, top_k=1), 1, **shape)[0].train()
    with torch.no_grad():
        layer(torch.randn(1, 4, D_MODEL))
        assert set(sum_aux_losses(layer)) == {"balance", "z"}  # fine while gradients are off
    with pytest.raises(RuntimeError, match=r"aux loss 'balance' of MoE layer '' carries no gradient"):
        sum_aux_losses(layer)
    assert set(sum_aux_losses(layer.eval())) == {"balance", "z"}  # and in evaluation
    layer.requires_grad_(False)
    assert set(sum_aux_losses(layer.train())) == {"balance", "z"}  # and with nothing to train
