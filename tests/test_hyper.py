"""HyperMoE's parts: selection from unselected experts, sharing, init, per-set generation."""

import dataclasses
import math
from collections import Counter

import pytest
import torch
from conftest import D_MODEL, grads, loud_hypernetwork
from torch.overrides import TorchFunctionMode

from hypermoe.moe import (
    HyperMoE,
    HyperMoESettings,
    HyperNetwork,
    HypernetworkSettings,
    TopKAdapterSettings,
    TopKMoE,
    TopKSettings,
    build_moe_stack,
    param_matched_bottleneck,
)
from hypermoe.moe.build import count_parameters, hyper_parameters_per_layer
from hypermoe.moe.hyper import generate_every_set

HYPER = HypernetworkSettings(selection_dim=8, hidden_dim=8, bottleneck=4, layer_embedding_dim=3)


def _layer(shape, aggregation="sum", top_k=2, num_experts=4):
    settings = HyperMoESettings(
        num_experts=num_experts,
        top_k=top_k,
        expert_embedding_dim=6,
        aggregation=aggregation,
        generation="per_token" if aggregation == "gate_weighted" else "per_set",
    )
    return HyperMoE(settings, **shape, hypernetwork=HyperNetwork(D_MODEL, 1, HYPER), layer_index=0)


def test_aggregation_masks(shape):
    chosen = torch.tensor([[0, 2], [3, 1]])
    expected = {
        "sum": [[0, 1, 0, 1], [1, 0, 1, 0]],
        "mean": [[0, 1, 0, 1], [1, 0, 1, 0]],
        "gate_weighted": [[0, 1, 0, 1], [1, 0, 1, 0]],
        "all": [[1, 1, 1, 1], [1, 1, 1, 1]],
        "selected": [[1, 0, 1, 0], [0, 1, 0, 1]],
    }
    for aggregation, mask in expected.items():
        assert _layer(shape, aggregation).aggregation_mask(chosen).int().tolist() == mask, aggregation
    random_mask = _layer(shape, "random").aggregation_mask(chosen.repeat(50, 1))
    assert torch.all(random_mask.sum(-1) == 2)  # N - k experts, drawn at random
    assert len({tuple(row) for row in random_mask.int().tolist()}) > 1


def test_hyper_expert_depends_only_on_the_unselected_set(shape):
    layer = _layer(shape, top_k=1)
    with torch.no_grad():
        for head in layer.hypernetwork.heads():
            torch.nn.init.normal_(head.weight)
        layer.router.weight.zero_()
        layer.router.weight[2, 0] = 10.0  # feature 0 > 0 sends a token to expert 2
    x = torch.randn(1, 6, D_MODEL)
    x[0, :, 0] = 2.0
    tokens, valid = x.view(-1, D_MODEL), torch.ones(6, dtype=torch.bool)
    _, routing = layer.moe(tokens, valid, 1)
    assert routing.expert_index[:, 0].tolist() == [2] * 6
    out, generated = layer.hyper_expert(tokens, valid, routing)
    assert generated == 1
    # one generated module, applied per token: identical inputs give identical outputs
    same = layer.hyper_expert(tokens[:1].repeat(6, 1), valid, routing)[0]
    torch.testing.assert_close(same, out[:1].repeat(6, 1))
    # the selection embedding used is MLP(sum of the embeddings of experts 0, 1, 3)
    emb = layer.selection.expert_embedding
    expected_selection = layer.selection.mlp(emb[0] + emb[1] + emb[3])
    torch.testing.assert_close(layer.selection(torch.tensor([[1.0, 1.0, 0.0, 1.0]]))[0], expected_selection)


@pytest.mark.parametrize(("num_experts", "top_k"), [(8, 1), (8, 2), (4, 3)])
def test_one_hyper_expert_per_distinct_set(shape, num_experts, top_k):
    layer = _layer(shape, top_k=top_k, num_experts=num_experts)
    x = torch.randn(4, 64, D_MODEL)
    layer(x)
    routing = layer.router(x.view(-1, D_MODEL), torch.ones(256, dtype=torch.bool))
    distinct = {tuple(sorted(row)) for row in routing.expert_index.tolist()}
    assert layer.routing_stats["hyper_generated"].item() == len(distinct) <= math.comb(num_experts, top_k)


@pytest.mark.parametrize("top_k", [1, 2])
def test_generating_for_the_whole_stack_at_once_changes_nothing(shape, top_k):
    """generate_every_set hands each layer the HyperExperts it would have generated itself:
    the same outputs and the same gradients, from one hypernetwork call instead of three."""
    settings = HyperMoESettings(num_experts=4, top_k=top_k, expert_embedding_dim=6, hypernetwork=HYPER)
    stack = build_moe_stack(settings, 3, **shape)
    calls = loud_hypernetwork(stack[0].hypernetwork, std=0.1)
    x = torch.randn(2, 16, D_MODEL)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 10:] = False

    def run(whole_stack: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        stack.zero_grad()
        calls.clear()
        generated = generate_every_set(stack) if whole_stack else {}
        h = x
        for layer in stack:
            h = h + layer(h, mask, **({"hyper_experts": generated[layer]} if whole_stack else {}))
        h.square().sum().backward()
        return h, grads(stack)

    out, out_grads = run(whole_stack=True)
    assert len(calls) == 1
    assert all(layer.routing_stats["hyper_generated"] == math.comb(4, top_k) for layer in stack)
    expected, expected_grads = run(whole_stack=False)
    assert len(calls) == 3
    torch.testing.assert_close(out, expected)
    assert out_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        torch.testing.assert_close(out_grads[name], grad, msg=name)


def test_hyper_experts_for_another_layer_shape_are_refused(shape):
    layer = _layer(shape, top_k=1)
    wrong = generate_every_set([_layer(shape, top_k=2)])  # C(4, 2) = 6 sets, where the layer has 4
    with pytest.raises(ValueError, match="got 6 HyperExperts for this layer's 4 possible sets"):
        layer(torch.randn(1, 3, D_MODEL), hyper_experts=next(iter(wrong.values())))


def test_random_aggregation_repeats_in_eval_only(shape):
    layer = _layer(shape, "random")
    chosen = torch.tensor([[0, 1]]).repeat(64, 1)
    layer.eval()
    assert torch.equal(layer.aggregation_mask(chosen), layer.aggregation_mask(chosen))
    layer.train()
    assert not torch.equal(layer.aggregation_mask(chosen), layer.aggregation_mask(chosen))


def test_hyperfanin_init_starts_near_zero(shape):
    hypernetwork = HyperNetwork(768, 1)
    h = 128
    # uniform within +-1e-3 sqrt(3 / (h * fan-in of the generated layer)): W_down's is d, W_up's b, a bias's 1
    for head, fan_in in zip(hypernetwork.heads(), (768, 64, 1, 1), strict=True):
        bound = 1e-3 * math.sqrt(3 / (h * fan_in))
        assert 0.99 * bound < head.weight.abs().max() <= bound  # thousands of draws come close to the bound
    assert all(torch.all(head.bias == 0) for head in hypernetwork.heads())
    layer = _layer(shape)
    layer(torch.randn(2, 8, D_MODEL))
    assert 0 < layer.routing_stats["hyper_norm_ratio"].item() < 1e-2


@pytest.mark.parametrize("top_k", [1, 2])
def test_the_norm_ratio_is_taken_before_the_hyper_expert_is_added_in_place(shape, top_k):
    layer = _layer(shape, top_k=top_k).eval()
    loud_hypernetwork(layer.hypernetwork, std=0.5)
    topk = TopKMoE(TopKSettings(num_experts=4, top_k=top_k), **shape).eval()
    topk.load_state_dict(layer.state_dict(), strict=False)  # the same router and experts
    x = torch.randn(2, 16, D_MODEL)
    with torch.no_grad():
        routed = topk(x)
        hyper_expert = layer(x) - routed
    assert layer.runs_on_expert_rows(x) == (top_k == 1)
    expected = hyper_expert.norm() / routed.norm()
    assert 0.05 < expected < 20  # both parts show
    assert layer.routing_stats["hyper_norm_ratio"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_hypernetwork_is_shared_across_the_stack_unless_per_layer(shape):
    settings = HyperMoESettings(num_experts=4, top_k=1, expert_embedding_dim=6, hypernetwork=HYPER)
    shared = build_moe_stack(settings, 3, **shape)
    assert shared[0].hypernetwork is shared[1].hypernetwork is shared[2].hypernetwork
    assert [layer.layer_index for layer in shared] == [0, 1, 2]
    assert shared[0].selection is not shared[1].selection
    separate = build_moe_stack(dataclasses.replace(settings, share_hypernetwork=False), 3, **shape)
    assert len({id(layer.hypernetwork) for layer in separate}) == 3
    hypernet = count_parameters(shared[0].hypernetwork)
    # per-layer hypernetworks own one layer embedding each instead of three in one table
    assert count_parameters(separate) - count_parameters(shared) == 2 * hypernet - 2 * 3 * 3
    # gradients from every layer reach the one shared hypernetwork
    x = torch.randn(2, 5, D_MODEL)
    for layer in shared:
        x = x + layer(x)
    x.sum().backward()
    assert shared[0].hypernetwork.layer_embedding.weight.grad.abs().sum(-1).gt(0).all()


def test_param_matched_adapter_width():
    d = 768
    target = 2_000_000.0
    width = param_matched_bottleneck(d, target)
    params = 2 * d * width + width + d
    assert abs(params - target) <= (2 * d + 1) / 2
    assert param_matched_bottleneck(d, 0) == 1


def test_adapter_control_is_parameter_matched_to_hypermoe(shape):
    hyper = build_moe_stack(HyperMoESettings(num_experts=4, top_k=1, hypernetwork=HYPER), 2, **shape)
    width = param_matched_bottleneck(D_MODEL, hyper_parameters_per_layer(hyper))
    adapter = build_moe_stack(TopKAdapterSettings(num_experts=4, top_k=1, adapter_bottleneck=width), 2, **shape)
    gap = abs(count_parameters(adapter) - count_parameters(hyper))
    assert gap <= 2 * (2 * D_MODEL + 1)  # within one adapter width step per layer


class _CountCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("generate_every_set_first", [False, True])
def test_at_top_1_the_hyper_expert_moves_no_token_that_topk_does_not(shape, generate_every_set_first):
    """At top-1 a token's selected set is its expert: the HyperExpert runs on the rows the
    experts' dispatch already sorted and gathered, and adds to them before the one scatter back,
    so the layer sorts, gathers and scatters tokens exactly as often as the plain top-k layer."""
    layer = _layer(shape, top_k=1).train()
    topk = TopKMoE(TopKSettings(num_experts=4, top_k=1), **shape).train()
    x = torch.randn(2, 16, D_MODEL, requires_grad=True)
    assert layer.runs_on_expert_rows(x)
    every_set = generate_every_set([layer])[layer] if generate_every_set_first else None
    with _CountCalls() as hyper_calls:
        layer(x, hyper_experts=every_set).sum().backward()
    with _CountCalls() as topk_calls:
        topk(x).sum().backward()
    assert topk_calls.calls["argsort"] and topk_calls.calls["index_select"] and topk_calls.calls["index_copy_"]
    for name in ("argsort", "sort", "unique", "searchsorted", "index_select", "index_copy", "index_copy_"):
        assert hyper_calls.calls[name] == topk_calls.calls[name], name
    assert layer.routing_stats["hyper_norm_ratio"] > 0
