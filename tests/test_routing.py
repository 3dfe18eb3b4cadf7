"""Routing behaviour: padding, capacity, train-only noise, recorded stats."""

import copy
import dataclasses
import math
import pickle

import pytest
import torch
from conftest import D_MODEL

from hypermoe.moe import (
    FFN,
    DenseMoE,
    DenseMoESettings,
    HyperMoE,
    HyperMoESettings,
    HyperNetwork,
    TopKAdapterMoE,
    TopKAdapterSettings,
    TopKMoE,
    TopKSettings,
)
from hypermoe.moe.build import VARIANTS, build_moe_stack
from hypermoe.moe.router import AUX_LOSSES
from hypermoe.moe.stats import routing_stats


def _all_variants(shape):
    return {
        "topk": TopKMoE(TopKSettings(num_experts=4, top_k=2, capacity_factor_train=1.0), **shape),
        "topk_noisy": TopKMoE(TopKSettings(num_experts=4, top_k=1, gating="noisy"), **shape),
        "topk_drops": TopKMoE(
            TopKSettings(num_experts=4, top_k=2, capacity_factor_eval=0.5, dropped_tokens="input"), **shape
        ),
        "dense_moe": DenseMoE(DenseMoESettings(num_experts=4), **shape),
        "topk_adapter": TopKAdapterMoE(TopKAdapterSettings(num_experts=4, top_k=1, adapter_bottleneck=4), **shape),
        "hypermoe": HyperMoE(
            HyperMoESettings(num_experts=4, top_k=2), **shape, hypernetwork=HyperNetwork(D_MODEL, 1), layer_index=0
        ),
        # top-1: the HyperExpert runs on the experts' own rows (HyperMoE.runs_on_expert_rows)
        "hypermoe_top1": HyperMoE(
            HyperMoESettings(num_experts=4, top_k=1), **shape, hypernetwork=HyperNetwork(D_MODEL, 1), layer_index=0
        ),
    }


# what every routed layer records (hypermoe.moe.stats)
ROUTING_STATS = {
    "load",
    "load_max_min_ratio",
    "dead_experts",
    "router_entropy",
    "router_logit_max_abs",
    "dropped_fraction",
    "tokens",
}


@pytest.mark.parametrize(
    "variant", ["topk", "topk_noisy", "topk_drops", "dense_moe", "topk_adapter", "hypermoe", "hypermoe_top1"]
)
def test_padding_is_never_routed_nor_counted(shape, variant):
    layer = _all_variants(shape)[variant].eval()
    if variant == "topk_adapter":  # its up-projection starts at zero: weights as after training
        torch.nn.init.normal_(layer.adapter.up.weight)
    x = torch.randn(2, 6, D_MODEL)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    y = layer(x, mask)
    assert torch.all(y[~mask] == 0)
    aux, stats = dict(layer.aux_losses), dict(layer.routing_stats)
    # Whatever the padding holds, the real tokens' outputs and every recorded number are unchanged.
    x_other = x.clone()
    x_other[~mask] = 100 * torch.randn_like(x_other[~mask])
    torch.testing.assert_close(layer(x_other, mask)[mask], y[mask])
    for name, value in aux.items():
        torch.testing.assert_close(layer.aux_losses[name], value, msg=name)
    for name, value in stats.items():
        torch.testing.assert_close(layer.routing_stats[name], value, msg=name)
    # ... and the same as running on the real tokens alone, without padding.
    torch.testing.assert_close(layer(x[mask].unsqueeze(0))[0], y[mask])
    for name, value in aux.items():
        torch.testing.assert_close(layer.aux_losses[name], value, msg=name)


def test_the_plain_ffn_outputs_zero_on_padding_too(shape):
    x, mask = torch.randn(2, 6, D_MODEL), torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    y = FFN(**shape)(x, mask)
    assert torch.all(y[~mask] == 0) and torch.all(y[mask].abs().sum(-1) > 0)


def test_the_adapter_control_starts_as_the_plain_moe(shape):
    """Its up-projection starts at zero, as HyperMoE's HyperExpert starts near zero."""
    layer = _all_variants(shape)["topk_adapter"].eval()
    plain = TopKMoE(TopKSettings(num_experts=4, top_k=1), **shape).eval()
    assert not plain.load_state_dict(layer.state_dict(), strict=False).missing_keys
    x = torch.randn(2, 6, D_MODEL)
    torch.testing.assert_close(layer(x), plain(x))


def test_padding_does_not_use_capacity(shape):
    layer = TopKMoE(TopKSettings(num_experts=2, top_k=1, capacity_factor_eval=1.0), **shape).eval()
    with torch.no_grad():
        layer.router.weight.zero_()  # every token ties and picks expert 0
    x = torch.randn(1, 8, D_MODEL)
    mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    y = layer(x, mask)
    # capacity = ceil(1.0 * 1 * 4 valid / 2) = 2: the first two real tokens are served
    served = y.abs().sum(-1)[0] > 0
    assert served.tolist() == [False] * 4 + [True, True, False, False]
    assert layer.routing_stats["dropped_fraction"].item() == pytest.approx(0.5)


def test_capacity_serves_first_choices_first(shape):
    layer = TopKMoE(TopKSettings(num_experts=4, top_k=2, capacity_factor_train=0.5), **shape).train()
    with torch.no_grad():
        # token features 0/1 steer the router: every token's first choice is expert 0 or 1
        layer.router.weight.zero_()
        layer.router.weight[0, 0] = layer.router.weight[1, 1] = 10.0
        layer.router.weight[2, 0] = layer.router.weight[2, 1] = 5.0
    x = torch.zeros(1, 8, D_MODEL)
    x[0, :4, 0] = 1.0  # tokens 0-3: expert 0 then 2
    x[0, 4:, 1] = 1.0  # tokens 4-7: expert 1 then 2
    routing = layer.router(x.view(-1, D_MODEL), torch.ones(8, dtype=torch.bool))
    assert routing.expert_index[:, 0].tolist() == [0] * 4 + [1] * 4
    assert routing.expert_index[:, 1].tolist() == [2] * 8
    layer(x)
    # capacity = ceil(0.5 * 2 * 8 / 4) = 2 per expert: experts 0 and 1 keep their first
    # two tokens; expert 2 takes two second choices (tokens 0 and 1), the rest are dropped.
    assert layer.routing_stats["dropped_fraction"].item() == pytest.approx(10 / 16)
    from hypermoe.moe.dispatch import capacity, plan_dispatch

    limit = capacity(0.5, torch.ones(8, dtype=torch.bool), 2, 4)
    plan = plan_dispatch(routing.expert_index, torch.ones(8, dtype=torch.bool), 4, limit)
    kept, counts = plan.kept()
    assert counts == [2, 2, 2, 0]
    # assignment id = rank * 8 + token: experts 0, 1, 2 serve tokens (0, 1), (4, 5), (0, 1)
    assert kept.tolist() == [0, 1, 4, 5, 8, 9]


def test_a_dropped_assignment_outputs_zero_or_its_input_times_its_gate(shape):
    rules = ("zero", "input")
    layers = {
        rule: TopKMoE(TopKSettings(num_experts=4, top_k=2, capacity_factor_train=0.5, dropped_tokens=rule), **shape)
        for rule in rules
    }
    with torch.no_grad():  # the routing of test_capacity_serves_first_choices_first
        layers["zero"].router.weight.zero_()
        layers["zero"].router.weight[0, 0] = layers["zero"].router.weight[1, 1] = 10.0
        layers["zero"].router.weight[2, 0] = layers["zero"].router.weight[2, 1] = 5.0
    layers["input"].load_state_dict(layers["zero"].state_dict())
    x = torch.randn(1, 8, D_MODEL)
    x[0, :, :2] = 0.0
    x[0, :4, 0] = x[0, 4:, 1] = 1.0
    y = {rule: layer.train()(x)[0] for rule, layer in layers.items()}
    gates = layers["zero"].router(x.view(-1, D_MODEL), torch.ones(8, dtype=torch.bool)).gates  # (8, 2)
    # capacity 2 per expert: tokens 0, 1 keep both choices, 4, 5 their first, 2, 3, 6, 7 neither
    kept = torch.tensor([[1, 1], [1, 1], [0, 0], [0, 0], [1, 0], [1, 0], [0, 0], [0, 0]], dtype=torch.bool)
    torch.testing.assert_close(y["input"] - y["zero"], (gates * ~kept).sum(-1, keepdim=True) * x[0])
    torch.testing.assert_close(y["zero"][~kept.any(-1)], torch.zeros(4, D_MODEL))


def test_capacity_factor_is_separate_for_train_and_eval(shape):
    layer = TopKMoE(TopKSettings(num_experts=2, top_k=1, capacity_factor_train=0.5, capacity_factor_eval=None), **shape)
    with torch.no_grad():
        layer.router.weight.zero_()
    x = torch.randn(1, 8, D_MODEL)
    layer.train()(x)
    assert layer.routing_stats["dropped_fraction"].item() == pytest.approx(6 / 8)  # capacity 2, all to expert 0
    layer.eval()(x)
    assert layer.routing_stats["dropped_fraction"].item() == 0.0


@pytest.mark.parametrize(
    "layer_kwargs", [{"gating": "switch", "jitter_eps": 0.5}, {"gating": "noisy"}], ids=["jitter", "noisy"]
)
def test_router_noise_is_on_in_training_only(shape, layer_kwargs):
    layer = TopKMoE(TopKSettings(num_experts=4, top_k=1, **layer_kwargs), **shape)
    with torch.no_grad():
        layer.router.weight.normal_()
        if layer_kwargs["gating"] == "noisy":
            layer.router.noise_weight.normal_()
    tokens, valid = torch.randn(32, D_MODEL), torch.ones(32, dtype=torch.bool)
    layer.eval()
    first, second = layer.router(tokens, valid), layer.router(tokens, valid)
    torch.testing.assert_close(first.logits, second.logits)
    layer.train()
    noisy = layer.router(tokens, valid)
    assert not torch.allclose(noisy.logits, first.logits)


def test_noisy_gating_starts_at_zero_and_renormalises(shape):
    layer = TopKMoE(TopKSettings(num_experts=4, top_k=2, gating="noisy"), **shape)
    assert torch.all(layer.router.weight == 0) and torch.all(layer.router.noise_weight == 0)
    routing = layer.train().router(torch.randn(16, D_MODEL), torch.ones(16, dtype=torch.bool))
    torch.testing.assert_close(routing.gates.sum(-1), torch.ones(16))
    layer(torch.randn(2, 8, D_MODEL))
    assert set(layer.aux_losses) == {"cv_importance", "cv_load"}


def test_router_runs_in_float32_under_autocast(shape):
    layer = TopKMoE(TopKSettings(num_experts=4, top_k=1), **shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        routing = layer.router(torch.randn(8, D_MODEL), torch.ones(8, dtype=torch.bool))
        y = layer(torch.randn(2, 4, D_MODEL))
    assert routing.logits.dtype == torch.float32 and routing.probs.dtype == torch.float32
    assert y.shape == (2, 4, D_MODEL)


def test_routing_stats_are_recorded_and_detached(shape):
    layer = TopKMoE(TopKSettings(num_experts=4, top_k=1), **shape)
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[1, 0] = 10.0
    x = torch.randn(1, 10, D_MODEL)
    x[0, :, 0] = torch.tensor([1.0] * 6 + [-1.0] * 4)  # 6 tokens to expert 1, 4 to the argmax of the rest
    layer(x)
    stats = layer.routing_stats
    assert set(stats) == ROUTING_STATS
    assert all(not value.requires_grad for value in stats.values())
    assert stats["load"].sum().item() == pytest.approx(1.0)
    assert stats["load"][1].item() == pytest.approx(0.6) and stats["tokens"].item() == 10
    assert stats["dead_experts"].item() >= 2  # 4 experts, at most 2 of them chosen
    assert stats["load_max_min_ratio"].item() == pytest.approx(6.0)  # dead experts count as 1
    assert 0 <= stats["router_entropy"].item() <= torch.log(torch.tensor(4.0)).item()
    assert stats["router_logit_max_abs"].item() == pytest.approx(10.0)  # |10 * x_0| with x_0 = +-1
    assert layer.aux_losses["balance"].requires_grad


def test_routing_stats_by_hand():
    """Top-2 of 3 experts: 3 valid tokens (6 assignments: 3, 2 and 1 per expert, one of expert 1's
    dropped by capacity) and one padded token, which counts for nothing."""
    logits = torch.tensor([[1.0, 1.0, -2.0], [2.0, 0.0, -3.0], [0.0, 0.0, 0.0], [9.0, 9.0, -9.0]])
    expert_index = torch.tensor([[0, 1], [0, 1], [0, 2], [1, 0]])
    valid = torch.tensor([True, True, True, False])
    stats = routing_stats(logits, logits.softmax(-1), expert_index, torch.tensor([3, 1, 1]), valid)
    entropies = [-sum(p * math.log(p) for p in row.tolist()) for row in logits[:3].softmax(-1)]  # nats
    assert stats.pop("load").tolist() == pytest.approx([3 / 6, 2 / 6, 1 / 6])  # shares of the assignments
    expected = {
        "load_max_min_ratio": 3.0,
        "dead_experts": 0.0,
        "router_entropy": sum(entropies) / 3,
        "router_logit_max_abs": 3.0,
        "dropped_fraction": 1 / 6,
        "tokens": 3.0,
    }
    assert {name: value.item() for name, value in stats.items()} == pytest.approx(expected)


@pytest.mark.parametrize("variant", ["topk", "topk_noisy", "dense_moe", "topk_adapter", "hypermoe"])
def test_a_layer_copies_and_pickles_after_a_training_step(shape, variant):
    """Its records of that step hold the step's autograd graph, which deepcopy refuses (as
    ``torch.optim.swa_utils.AveragedModel`` and Lightning's weight averaging copy the model): a
    copy or a pickle starts without them, as a fresh layer does, and computes the same."""
    layer = _all_variants(shape)[variant].train()
    x = torch.randn(2, 6, D_MODEL)
    layer(x).sum().backward()
    assert any(value.requires_grad for value in layer.aux_losses.values())
    twin = copy.deepcopy(layer)
    assert (twin.aux_losses, twin.routing_stats) == ({}, {}) and layer.routing_stats
    restored = pickle.loads(pickle.dumps(layer))
    assert restored.aux_losses == {} and layer.aux_losses  # the original keeps its own
    layer.eval(), twin.eval(), restored.eval()
    torch.testing.assert_close(twin(x), layer(x))
    torch.testing.assert_close(restored(x), layer(x))


def test_expert_dropout_is_on_in_training_only(shape):
    layer = TopKMoE(TopKSettings(num_experts=4, top_k=2), **shape, dropout=0.5)
    x = torch.randn(2, 6, D_MODEL)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


@pytest.mark.parametrize("variant", ["topk", "topk_noisy", "dense_moe", "topk_adapter", "hypermoe", "hypermoe_top1"])
def test_all_padding_and_empty_batches(shape, variant):
    layer = _all_variants(shape)[variant].train()
    x = torch.randn(2, 3, D_MODEL, requires_grad=True)
    y = layer(x, torch.zeros(2, 3, dtype=torch.bool))
    assert torch.all(y == 0)
    y.sum().backward()
    assert layer(torch.randn(0, 3, D_MODEL)).shape == (0, 3, D_MODEL)


@pytest.mark.parametrize("generation", ["per_set", "per_token"])
def test_hypermoe_keeps_the_autocast_dtype(shape, generation):
    layer = HyperMoE(
        HyperMoESettings(num_experts=4, top_k=2, generation=generation),
        **shape,
        hypernetwork=HyperNetwork(D_MODEL, 1),
        layer_index=0,
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(2, 5, D_MODEL))
    assert y.dtype == torch.bfloat16


def test_dense_moe_records_every_stat(shape):
    layer = DenseMoE(DenseMoESettings(num_experts=4), **shape)
    layer(torch.randn(2, 5, D_MODEL))
    assert set(layer.routing_stats) == ROUTING_STATS
    assert layer.routing_stats["load"].sum().item() == pytest.approx(1.0)
    assert layer.routing_stats["dropped_fraction"].item() == 0.0


def test_every_aux_loss_a_layer_records_is_one_the_config_can_weigh(shape):
    """model.aux_loss_coefficients refuses any other name (hypermoe.validation)."""
    recorded = set()
    for layer in _all_variants(shape).values():
        layer.train()(torch.randn(2, 5, D_MODEL))
        recorded |= set(layer.aux_losses)
    assert recorded == set(AUX_LOSSES)


def _registered(name: str, shape: dict) -> torch.nn.Module:
    """A layer of the variant VARIANTS names ``name``, with its default settings (4 experts)."""
    settings_class = VARIANTS[name].settings
    fields = {spec.name for spec in dataclasses.fields(settings_class)}
    settings = settings_class(**({"num_experts": 4} if "num_experts" in fields else {}))
    (layer,) = build_moe_stack(settings, num_layers=1, **shape)
    return layer


@pytest.mark.parametrize("name", sorted(set(VARIANTS) - {"ffn"}))
def test_every_registered_variant_keeps_the_layer_protocol(shape, name):
    """What the trainer and callbacks rely on, for each variant in VARIANTS (one added there is
    checked too): padding outputs zero; the aux losses it records are ones the trainer weighs and
    carry gradient in training; its stats are detached; a copy after a training step computes the same."""
    layer = _registered(name, shape).train()
    with torch.no_grad():  # weights as after training: no part left at its zero initialisation
        for parameter in layer.parameters():
            parameter.add_(torch.randn_like(parameter), alpha=0.1)
    x, mask = torch.randn(2, 6, D_MODEL), torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    y = layer(x, mask)
    assert torch.all(y[~mask] == 0) and y.shape == x.shape
    assert layer.aux_losses and set(layer.aux_losses) <= set(AUX_LOSSES)
    assert all(value.requires_grad for value in layer.aux_losses.values())
    stats = layer.routing_stats  # the expert-load callback reads load (e,), tokens and num_experts
    assert stats and not any(value.requires_grad for value in stats.values())
    assert stats["load"].shape == (layer.num_experts,) and stats["tokens"] == mask.sum()
    top = layer.top_expert  # (n,) each token's first-choice expert, -1 for padding
    assert top.shape == mask.flatten().shape and torch.all((top == -1) == ~mask.flatten()) and top.max() < 4
    (y.sum() + sum(layer.aux_losses.values())).backward()
    twin = copy.deepcopy(layer).eval()
    torch.testing.assert_close(twin(x, mask), layer.eval()(x, mask))
    assert torch.all(layer(torch.randn(2, 3, D_MODEL), torch.zeros(2, 3, dtype=torch.bool)) == 0)
