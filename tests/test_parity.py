"""Composition proved by parity: each variant reduces to the simpler one it is built from."""

import pytest
import torch
from conftest import D_MODEL, grads

from hypermoe.moe import (
    FFN,
    DenseMoE,
    DenseMoESettings,
    HyperMoE,
    HyperMoESettings,
    HyperNetwork,
    HypernetworkSettings,
    TopKMoE,
    TopKSettings,
)


def _run(layer, x, mask=None):
    x = x.clone().requires_grad_()
    y = layer(x, mask)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("gating", ["switch", "noisy"])
@pytest.mark.parametrize("bias", [True, False])
def test_topk_with_one_expert_equals_ffn(shape, gating, bias):
    shape["bias"] = bias
    ffn = FFN(**shape)
    moe = TopKMoE(TopKSettings(num_experts=1, top_k=1, gating=gating), **shape, dense_ffn=ffn)
    x = torch.randn(3, 7, D_MODEL)
    y_ffn, dx_ffn = _run(ffn, x)
    y_moe, dx_moe = _run(moe, x)
    torch.testing.assert_close(y_moe, y_ffn)
    torch.testing.assert_close(dx_moe, dx_ffn)
    g_ffn, g_moe = grads(ffn), grads(moe)
    for name, grad in g_ffn.items():
        torch.testing.assert_close(g_moe[f"experts.ffns.0.{name}"], grad, msg=name)


def test_topk_with_k_equal_n_dropless_equals_dense_moe(shape):
    dense = DenseMoE(DenseMoESettings(num_experts=4), **shape)
    topk = TopKMoE(TopKSettings(num_experts=4, top_k=4), **shape)
    topk.load_state_dict(dense.state_dict())
    x = torch.randn(2, 9, D_MODEL)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    y_dense, dx_dense = _run(dense, x, mask)
    y_topk, dx_topk = _run(topk, x, mask)
    torch.testing.assert_close(y_topk, y_dense)
    torch.testing.assert_close(dx_topk, dx_dense)
    g_dense, g_topk = grads(dense), grads(topk)
    assert g_dense.keys() == g_topk.keys()
    for name in g_dense:
        torch.testing.assert_close(g_topk[name], g_dense[name], msg=name)


@pytest.mark.parametrize("top_k", [1, 2])
def test_hypermoe_with_zeroed_heads_equals_topk(shape, top_k):
    topk = TopKMoE(TopKSettings(num_experts=4, top_k=top_k), **shape)
    hyper = HyperMoE(
        HyperMoESettings(num_experts=4, top_k=top_k), **shape, hypernetwork=HyperNetwork(D_MODEL, 1), layer_index=0
    )
    missing, unexpected = hyper.load_state_dict(topk.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("hypernetwork.", "selection.")) for k in missing)
    with torch.no_grad():
        for head in hyper.hypernetwork.heads():
            head.weight.zero_()
            head.bias.zero_()
    x = torch.randn(2, 6, D_MODEL)
    y_topk, dx_topk = _run(topk, x)
    y_hyper, dx_hyper = _run(hyper, x)
    torch.testing.assert_close(y_hyper, y_topk)
    torch.testing.assert_close(dx_hyper, dx_topk)
    g_topk, g_hyper = grads(topk), grads(hyper)
    for name in g_topk:
        torch.testing.assert_close(g_hyper[name], g_topk[name], msg=name)


def _hyper_pair(shape, top_k, aggregation):
    """The same HyperMoE twice, once per generation path, with heads scaled up so the
    HyperExpert output is O(1) and a mismatch could not hide under the 1e-3 init."""
    routed = {"num_experts": 5, "top_k": top_k, "aggregation": aggregation}
    hypernetwork = HypernetworkSettings(bottleneck=8)
    fast = HyperMoE(
        HyperMoESettings(**routed, generation="per_set"),
        **shape,
        hypernetwork=HyperNetwork(D_MODEL, 2, hypernetwork),
        layer_index=1,
    )
    with torch.no_grad():
        for head in fast.hypernetwork.heads():
            torch.nn.init.normal_(head.weight, std=0.3)
            torch.nn.init.normal_(head.bias, std=0.3)
    reference = HyperMoE(
        HyperMoESettings(**routed, generation="per_token"),
        **shape,
        hypernetwork=HyperNetwork(D_MODEL, 2, hypernetwork),
        layer_index=1,
    )
    reference.load_state_dict(fast.state_dict())
    return fast, reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("aggregation", ["sum", "mean", "all", "selected", "random"])
def test_per_set_generation_equals_per_token(shape, top_k, aggregation, dtype):
    fast, reference = _hyper_pair(shape, top_k, aggregation)
    fast, reference = fast.to(dtype), reference.to(dtype)
    x = torch.randn(3, 11, D_MODEL, dtype=dtype)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[0, 8:] = False
    torch.manual_seed(1)  # "random" draws its expert sets: same draws on both paths
    y_fast, dx_fast = _run(fast, x, mask)
    torch.manual_seed(1)
    y_ref, dx_ref = _run(reference, x, mask)
    hyper_part = y_fast - fast.moe(x.reshape(-1, D_MODEL), mask.reshape(-1), 3)[0].detach().view_as(x)
    assert hyper_part[mask].abs().mean() > 0.1, "the HyperExpert must contribute for this test to mean anything"
    torch.testing.assert_close(y_fast, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx_fast, dx_ref, atol=1e-5, rtol=1e-5)
    g_fast, g_ref = grads(fast), grads(reference)
    assert g_fast.keys() == g_ref.keys()
    for name in g_fast:
        # float32 gradients reach ~1e2 here, so their rounding is relative to that scale.
        scale = 1.0 if dtype == torch.float64 else g_ref[name].abs().max().item()
        torch.testing.assert_close(g_fast[name], g_ref[name], atol=1e-5 * scale, rtol=1e-5, msg=name)


def test_upcycled_experts_reproduce_the_source_ffn(shape):
    ffn = FFN(**shape)
    x = torch.randn(4, 5, D_MODEL)
    expected = ffn(x)
    noisy = TopKMoE(TopKSettings(num_experts=8, top_k=2, gating="noisy"), **shape, dense_ffn=ffn).eval()
    every_expert = noisy.experts(x.view(-1, D_MODEL).repeat(8, 1), [20] * 8)  # (8 * 20, d)
    torch.testing.assert_close(every_expert, expected.view(-1, D_MODEL).repeat(8, 1))
    # Renormalised gates sum to one, so the upcycled layer is the dense FFN before training.
    torch.testing.assert_close(noisy(x), expected)
    torch.testing.assert_close(DenseMoE(DenseMoESettings(num_experts=8), **shape, dense_ffn=ffn)(x), expected)
    # Switch scales by the top-1 probability, as in the Switch Transformer.
    switch = TopKMoE(TopKSettings(num_experts=8, top_k=1, gating="switch"), **shape, dense_ffn=ffn)
    probs = switch.router(x.view(-1, D_MODEL), torch.ones(20, dtype=torch.bool)).gates
    torch.testing.assert_close(switch(x), expected * probs.view(4, 5, 1))
