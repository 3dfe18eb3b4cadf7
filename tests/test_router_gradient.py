"""Routers learn from the task: under every backbone's default gating, for every variant with a
router, at top-1 and top-2, the task loss alone sends the router a gradient. The one gating that
cannot at top-1 (noisy top-k, the official GPT-2 recipe) is only there when named, and the run
says so when it starts."""

import logging

import pytest
import torch
from helpers import CONF, compose_config

from hypermoe.config import to_container
from hypermoe.moe.build import stack_from_config
from hypermoe.moe.layers import TopKMoE
from hypermoe.moe.settings import TopKSettings
from hypermoe.validation import warn_if_no_expert_is_unselected, warn_if_router_gets_no_task_gradient

BACKBONES = sorted(path.stem for path in (CONF / "backbone").glob("*.yaml"))
ROUTED = ("topk", "hypermoe", "topk_adapter", "dense_moe")
UPCYCLED = ("minilm", "gpt2_moe", "gpt2_tiny")


def _stack(backbone: str, variant: str, top_k: int, tmp_path, *extra: str):
    overrides = [f"backbone={backbone}", f"model={variant}", *extra]
    if variant != "dense_moe":
        overrides.append(f"model.top_k={top_k}")
    model = to_container(compose_config("train", overrides, tmp_path).model)
    return model, stack_from_config(model, num_layers=2, d_model=16, d_ff=32, activation="gelu", bias=True)


def _task_gradients(stack) -> list[float]:
    """Each layer's largest |d task loss / d router weight|, for a router as training leaves it
    (not at its initialisation: the noisy router starts at zero, where every gate is equal)."""
    with torch.no_grad():
        for layer in stack:
            torch.nn.init.normal_(layer.router.weight, std=0.3)
    x = torch.randn(2, 6, 16)
    loss = sum((layer(x) * torch.randn_like(x)).sum() for layer in stack)  # the task loss alone, no aux
    loss.backward()
    return [float(layer.router.weight.grad.abs().max()) for layer in stack]


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("variant", ROUTED)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_task_loss_trains_the_router_under_every_backbones_default_gating(backbone, variant, top_k, tmp_path):
    model, stack = _stack(backbone, variant, top_k, tmp_path)
    assert not warn_if_router_gets_no_task_gradient(compose_config("train", [f"backbone={backbone}"], tmp_path).model)
    assert all(gradient > 1e-4 for gradient in _task_gradients(stack)), model.get("gating")


@pytest.mark.parametrize("backbone", UPCYCLED)
def test_upcycled_backbones_default_gating_starts_as_the_dense_model(backbone, tmp_path):
    """Their default gates sum to 1, so identical experts give the FFN they were copied from."""
    model, _ = _stack(backbone, "topk", 1, tmp_path)
    assert model["gating"] == "renorm"
    for top_k in (1, 2):
        torch.manual_seed(0)
        layer = TopKMoE(TopKSettings(num_experts=8, top_k=top_k, gating="renorm"), 16, 32, "gelu", True)
        dense = TopKMoE(TopKSettings(num_experts=1, top_k=1, gating="renorm"), 16, 32, "gelu", True).experts.ffns[0]
        layer.experts.upcycle_from(dense)
        torch.nn.init.normal_(layer.router.weight, std=0.3)
        x = torch.randn(3, 5, 16)
        torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-6)


def test_noisy_top1_gets_no_task_gradient_and_the_run_says_so_at_start(tmp_path, caplog):
    _, stack = _stack("minilm", "topk", 1, tmp_path, "model.gating=noisy")
    assert _task_gradients(stack) == [0.0, 0.0]  # the official GPT-2 recipe's router: balance losses only
    cfg = compose_config("train", ["model=topk", "model.gating=noisy", "model.top_k=1"], tmp_path)
    with caplog.at_level(logging.WARNING, logger="hypermoe.validation"):
        assert warn_if_router_gets_no_task_gradient(cfg.model)
    assert "model.gating=noisy with model.top_k=1" in caplog.text and "no gradient" in caplog.text
    _, stack = _stack("minilm", "topk", 2, tmp_path, "model.gating=noisy")
    assert all(gradient > 1e-4 for gradient in _task_gradients(stack))  # at top-2 it learns


@pytest.mark.parametrize(
    "overrides, warned",
    [
        (["model.num_experts=2", "model.top_k=2"], True),
        (["model.num_experts=2", "model.top_k=2", "model.aggregation=all"], False),  # all experts: no unselected set
        (["model.num_experts=2", "model.top_k=1"], False),
        (["model=topk", "model.num_experts=2", "model.top_k=2"], False),
    ],
)
def test_hypermoe_selecting_every_expert_is_said_to_be_a_static_adapter(tmp_path, caplog, overrides, warned):
    cfg = compose_config("train", ["model=hypermoe", *overrides], tmp_path)
    with caplog.at_level(logging.WARNING, logger="hypermoe.validation"):
        assert warn_if_no_expert_is_unselected(cfg.model) is warned
    assert ("no expert is left unselected" in caplog.text) is warned
