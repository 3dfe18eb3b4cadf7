"""The grouped FFN kernel against autograd on a plain per-group composition."""

import pytest
import torch
import torch.nn.functional as F

from hypermoe.moe.grouped import ACTIVATIONS, grouped_ffn

COUNTS = [3, 0, 5, 1]  # an empty group on purpose


def _weights(bias: bool, dtype=torch.float64) -> dict:
    """Per-group weight lists, as grouped_ffn takes them."""
    g, d, f = len(COUNTS), 4, 6

    def make(*shape):
        return [torch.randn(*shape, dtype=dtype, requires_grad=True) for _ in range(g)]

    return {
        "w_in": make(f, d),
        "b_in": make(f) if bias else None,
        "w_out": make(d, f),
        "b_out": make(d) if bias else None,
    }


def _flat(weights: dict) -> list:
    return [t for name in ("w_in", "b_in", "w_out", "b_out") for t in (weights[name] or [])]


def _reference(x, w_in, b_in, w_out, b_out, activation):
    outputs, start = [], 0
    for j, count in enumerate(COUNTS):
        rows = x[start : start + count]
        hidden = ACTIVATIONS[activation](F.linear(rows, w_in[j], None if b_in is None else b_in[j]))
        outputs.append(F.linear(hidden, w_out[j], None if b_out is None else b_out[j]))
        start += count
    return torch.cat(outputs)


def _unflatten(flat, bias: bool) -> dict:
    g = len(COUNTS)
    chunks = [list(flat[i : i + g]) for i in range(0, len(flat), g)]
    if bias:
        return dict(zip(("w_in", "b_in", "w_out", "b_out"), chunks, strict=True))
    return {"w_in": chunks[0], "b_in": None, "w_out": chunks[1], "b_out": None}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False])
def test_matches_per_group_composition(activation, bias):
    x = torch.randn(sum(COUNTS), 4, dtype=torch.float64, requires_grad=True)
    weights = _weights(bias)
    params = [x, *_flat(weights)]
    out = grouped_ffn(x, COUNTS, **weights, activation=activation)
    expected = _reference(x, **weights, activation=activation)
    torch.testing.assert_close(out, expected)
    upstream = torch.randn_like(out)
    got = torch.autograd.grad(out, params, upstream)
    want = torch.autograd.grad(expected, params, upstream)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.all(got[2] == 0)  # the empty group's w_in gradient is zero


@pytest.mark.parametrize("activation", ["relu", "gelu_tanh"])
def test_gradcheck_with_dropout(activation):
    x = torch.randn(sum(COUNTS), 4, dtype=torch.float64, requires_grad=True)
    flat = _flat(_weights(bias=True))

    def run(x, *flat, dropout=0.5):
        torch.manual_seed(3)  # the same dropout mask on every evaluation
        return grouped_ffn(x, COUNTS, **_unflatten(flat, bias=True), activation=activation, dropout=dropout)

    assert torch.autograd.gradcheck(run, (x, *flat))
    assert not torch.allclose(run(x, *flat), run(x, *flat, dropout=0.0))


def test_runs_in_the_autocast_dtype():
    x = torch.randn(sum(COUNTS), 4)
    weights = _weights(bias=True, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = grouped_ffn(x, COUNTS, **weights, activation="gelu")
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert weights["w_in"][0].grad.dtype == torch.float32


def test_counts_must_cover_the_rows():
    with pytest.raises(ValueError, match="counts sum to 9 but x has 5 rows"):
        grouped_ffn(torch.randn(5, 4), COUNTS, **_weights(bias=False, dtype=torch.float32), activation="relu")
