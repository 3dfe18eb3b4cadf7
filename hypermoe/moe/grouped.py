"""Grouped FFN: rows of group j go through FFN j, as one autograd node for all groups.

Two kernels compute it:
- ``loop`` (``grouped_ffn``): group sizes as Python ints, one GEMM per group. Fastest on CPU.
- ``grouped_mm`` (``grouped_ffn_mm``): group ends as a device tensor and ``torch._grouped_mm``,
  one launch per GEMM for all groups and no host synchronisation: the GPU path (megablocks'
  grouped GEMM). ``auto`` picks it on CUDA.

Shape legend: n rows (tokens sorted by group), d in/out features, f hidden features,
g groups, c rows of one group.

Per group, both GEMMs, the bias, the activation and dropout run back to back on a (c, f)
hidden block that stays in cache, and every GEMM writes straight into its slice of the
output (a grouped GEMM, as megablocks does on GPU). Weights come as one tensor per group,
so each weight gradient is its own (f, d) tensor: a stacked (g, f, d) gradient would be
too large for the CPU allocator to recycle and would be page-faulted in anew every step.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # BERT / MiniLM
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's gelu_new
    "silu": F.silu,
}
# d activation(pre) / d pre, applied to an incoming gradient
_ACTIVATION_GRADS = {
    "relu": lambda grad, pre: torch.ops.aten.threshold_backward(grad, pre, 0),
    "gelu": lambda grad, pre: torch.ops.aten.gelu_backward(grad, pre),
    "gelu_tanh": lambda grad, pre: torch.ops.aten.gelu_backward(grad, pre, approximate="tanh"),
    "silu": lambda grad, pre: torch.ops.aten.silu_backward(grad, pre),
}


KERNELS = ("auto", "loop", "grouped_mm")


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype x's matmuls run in: the autocast dtype under autocast, else x's own."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def resolve_kernel(kernel: str, x: Tensor) -> str:
    """``auto``: ``grouped_mm`` for bf16 on CUDA where torch has it (torch._grouped_mm is a
    bf16 kernel there, and torch.compile traces it in bf16 only), else ``loop``."""
    if kernel != "auto":
        return kernel
    usable = x.is_cuda and hasattr(torch, "_grouped_mm") and compute_dtype(x) == torch.bfloat16
    return "grouped_mm" if usable else "loop"


def _linear_into(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """out = x @ weight.T + bias, written in place."""
    if bias is None:
        torch.mm(x, weight.t(), out=out)
    else:
        torch.addmm(bias, x, weight.t(), out=out)


def _group_slices(counts: list[int]):
    """(group index, row slice) of every non-empty group."""
    start = 0
    for j, count in enumerate(counts):
        if count:
            yield j, slice(start, start + count)
        start += count


def _split(flat: tuple, num_groups: int, has_b_in: bool, has_b_out: bool) -> tuple[list, list, list, list]:
    """Flat (w_in..., b_in..., w_out..., b_out...) -> four per-group lists (None for no bias)."""
    flat = list(flat)
    parts = []
    for present in (True, has_b_in, True, has_b_out):
        parts.append(flat[:num_groups] if present else [None] * num_groups)
        flat = flat[num_groups:] if present else flat
    return tuple(parts)


class _GroupedFFN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, counts, activation, dropout, has_b_in, has_b_out, *weights):
        w_in, b_in, w_out, b_out = _split(weights, len(counts), has_b_in, has_b_out)
        pre = x.new_empty(x.shape[0], w_in[0].shape[0])  # (n, f) pre-activation, kept for backward
        out = x.new_empty(x.shape[0], w_out[0].shape[0])  # (n, d)
        keep = torch.empty(pre.shape, dtype=torch.bool, device=x.device) if dropout else None
        for j, rows in _group_slices(counts):
            _linear_into(pre[rows], x[rows], w_in[j], b_in[j])
            hidden = ACTIVATIONS[activation](pre[rows])  # (c, f)
            if keep is not None:
                keep[rows] = torch.rand_like(hidden) >= dropout
                hidden = hidden * keep[rows] / (1 - dropout)
            _linear_into(out[rows], hidden, w_out[j], b_out[j])
        ctx.save_for_backward(x, pre, keep, *weights)
        ctx.counts, ctx.activation, ctx.dropout, ctx.has_bias = counts, activation, dropout, (has_b_in, has_b_out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, pre, keep, *weights = ctx.saved_tensors
        w_in, b_in, w_out, b_out = _split(weights, len(ctx.counts), *ctx.has_bias)
        grad_out = grad_out.contiguous()
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None  # every row is in a non-empty group
        grads = {name: [None] * len(ctx.counts) for name in ("w_in", "b_in", "w_out", "b_out")}
        for j, rows in _group_slices(ctx.counts):
            grad_y = grad_out[rows]  # (c, d)
            hidden = ACTIVATIONS[ctx.activation](pre[rows])  # recomputed: cheaper than storing it
            if keep is not None:
                hidden = hidden * keep[rows] / (1 - ctx.dropout)
            grads["w_out"][j] = grad_y.t() @ hidden
            grads["b_out"][j] = grad_y.sum(0) if b_out[j] is not None else None
            grad_hidden = grad_y @ w_out[j]  # (c, f)
            if keep is not None:
                grad_hidden = grad_hidden * keep[rows] / (1 - ctx.dropout)
            grad_pre = _ACTIVATION_GRADS[ctx.activation](grad_hidden, pre[rows])
            grads["w_in"][j] = grad_pre.t() @ x[rows]
            grads["b_in"][j] = grad_pre.sum(0) if b_in[j] is not None else None
            if grad_x is not None:
                torch.mm(grad_pre, w_in[j], out=grad_x[rows])
        flat = []
        for name, tensors, present in (
            ("w_in", w_in, True),
            ("b_in", b_in, ctx.has_bias[0]),
            ("w_out", w_out, True),
            ("b_out", b_out, ctx.has_bias[1]),
        ):
            if present:  # a group without rows gets a zero gradient
                flat += [torch.zeros_like(t) if g is None else g for g, t in zip(grads[name], tensors, strict=True)]
        return (grad_x, None, None, None, None, None, *flat)


def grouped_ffn(
    x: Tensor,
    counts: list[int],
    w_in: Sequence[Tensor],
    b_in: Sequence[Tensor] | None,
    w_out: Sequence[Tensor],
    b_out: Sequence[Tensor] | None,
    activation: str,
    dropout: float = 0.0,
) -> Tensor:
    """Group j's rows of x (n, d) -> W_out[j] dropout(act(W_in[j] x + b_in[j])) + b_out[j].

    counts[j] consecutive rows belong to group j. One weight per group, in nn.Linear layout:
    w_in[j] (f, d), w_out[j] (d, f), biases (f,) and (d,), or None for no biases.
    ``dropout`` is the probability to pass in training (0 in eval). Under autocast, runs
    in the autocast dtype as nn.Linear would.
    """
    if sum(counts) != x.shape[0]:
        raise ValueError(f"counts sum to {sum(counts)} but x has {x.shape[0]} rows")
    groups = [w_in, w_out] + [b for b in (b_in, b_out) if b is not None]
    if any(len(weights) != len(counts) for weights in groups):
        raise ValueError(f"every weight list needs one tensor per group ({len(counts)})")
    dtype = compute_dtype(x)
    flat = [t.to(dtype) for t in (*w_in, *(b_in or ()), *w_out, *(b_out or ()))]
    return _GroupedFFN.apply(
        x.to(dtype).contiguous(), counts, activation, dropout, b_in is not None, b_out is not None, *flat
    )


def grouped_ffn_mm(
    x: Tensor,
    group_ends: Tensor,
    row_group: Tensor,
    w_in: Tensor,
    b_in: Tensor | None,
    w_out: Tensor,
    b_out: Tensor | None,
    activation: str,
    dropout: float = 0.0,
) -> Tensor:
    """``grouped_ffn`` without a host sync: rows up to group_ends[0] belong to group 0, the
    next ones up to group_ends[1] to group 1, and so on; rows after group_ends[-1] (dropped
    assignments, padding) output zero.

    x (n, d); group_ends (g,) int32, non-decreasing; row_group (n,) int64 group of every row
    (any valid index for rows after group_ends[-1]); stacked weights w_in (g, f, d),
    w_out (g, d, f), biases (g, f) and (g, d) or None. Needs every dimension times the
    element size to be a multiple of 16 bytes (torch._grouped_mm).
    """
    device, dtype = x.device.type, compute_dtype(x)
    # _grouped_mm leaves rows after the last group undefined (not even finite), in its output
    # and in its input gradient: torch.where (never a product) on its inputs and outputs keeps
    # them out of the result and out of every gradient, the biases' included.
    inside = (torch.arange(x.shape[0], device=x.device) < group_ends[-1]).unsqueeze(-1)  # (n, 1)
    with torch.autocast(device_type=device, enabled=False):  # _grouped_mm has no autocast rule
        x = torch.where(inside, x.to(dtype), 0)
        pre = torch._grouped_mm(x, w_in.to(dtype).transpose(1, 2), offs=group_ends)  # (n, f)
        if b_in is not None:
            pre = pre + b_in.to(dtype)[row_group]
        pre = torch.where(inside, pre, 0)  # before the activation, whose gradient at garbage is garbage
        hidden = F.dropout(ACTIVATIONS[activation](pre), dropout, training=dropout > 0)
        out = torch._grouped_mm(hidden, w_out.to(dtype).transpose(1, 2), offs=group_ends)  # (n, d)
        if b_out is not None:
            out = out + b_out.to(dtype)[row_group]
        return torch.where(inside, out, 0)
