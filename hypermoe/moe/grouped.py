"""Grouped linear layer: slice i of the input through weight i, one autograd node for all.

Shape legend: n rows (tokens sorted by group), i in_features, o out_features, g groups.
Looping ``F.linear`` over ``weight[j]`` would make autograd build g gradients of the whole
(g, o, i) stack and sum them (or, with unbind, concatenate them): on CPU that copy costs as
much as a quarter of the matmuls. Here every GEMM writes straight into its slice of the
output and of the weight gradient, as a grouped GEMM kernel does.
"""

import torch
from torch import Tensor


class _GroupedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, counts: list[int]) -> Tensor:
        out = x.new_empty(x.shape[0], weight.shape[1])  # (n, o)
        start = 0
        for j, count in enumerate(counts):
            if count:
                rows = slice(start, start + count)
                if bias is None:
                    torch.mm(x[rows], weight[j].t(), out=out[rows])
                else:
                    torch.addmm(bias[j], x[rows], weight[j].t(), out=out[rows])
            start += count
        ctx.save_for_backward(x, weight)
        ctx.counts, ctx.has_bias = counts, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        grad_x = x.new_empty(x.shape) if need_x else None
        grad_w = torch.empty_like(weight) if need_w else None
        grad_b = weight.new_empty(weight.shape[:2]) if need_b and ctx.has_bias else None
        start = 0
        for j, count in enumerate(ctx.counts):
            if count:
                rows = slice(start, start + count)
                if grad_x is not None:
                    torch.mm(grad_out[rows], weight[j], out=grad_x[rows])
                if grad_w is not None:
                    torch.mm(grad_out[rows].t(), x[rows], out=grad_w[j])
                if grad_b is not None:
                    torch.sum(grad_out[rows], dim=0, out=grad_b[j])
            else:  # a group without rows gets a zero gradient
                for grad in (grad_w, grad_b):
                    if grad is not None:
                        grad[j].zero_()
            start += count
        return grad_x, grad_w, grad_b, None


def grouped_linear(x: Tensor, weight: Tensor, bias: Tensor | None, counts: list[int]) -> Tensor:
    """Rows ``sum(counts[:j]) : sum(counts[:j+1])`` of x (n, i) go through weight[j] (o, i) and bias[j].

    weight: (g, o, i) in nn.Linear layout; bias: (g, o) or None. Under autocast, runs in the
    autocast dtype, as nn.Linear would.
    """
    if sum(counts) != x.shape[0]:
        raise ValueError(f"counts sum to {sum(counts)} but x has {x.shape[0]} rows")
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    elif weight.dtype != x.dtype:
        weight = weight.to(x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
    return _GroupedLinear.apply(x.contiguous(), weight, bias, counts)
