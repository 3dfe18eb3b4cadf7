"""Vectorised token dispatch: sort (token, slot) assignments by expert, apply capacity.

Shape legend: n tokens, k slots per token, s = k * n assignments, e experts, d d_model.
Assignments are numbered rank-major (s = j * n + i for token i's j-th choice) so that,
under a capacity limit, every token's first choice is served before any second choice
and, within a rank, earlier tokens first (GShard / Switch priority).
"""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DispatchPlan:
    order: Tensor  # (s,) assignment ids sorted by expert; dropped ones (padding, overflow) last
    counts: Tensor  # (e,) assignments each expert processes
    num_tokens: int  # n
    sorted_expert: Tensor  # (s,) the expert of each assignment in ``order``; e for dropped ones
    overflow: Tensor  # (s,) bool by assignment id: a real token's assignment dropped for capacity

    def kept(self) -> tuple[Tensor, list[int]]:
        """The kept assignment ids (sorted by expert) and the per-expert counts as ints, for
        the ``loop`` kernel.

        ``tolist`` syncs with the device; it is what lets each expert run on a plain slice.
        """
        counts = self.counts.tolist()
        return self.order[: sum(counts)], counts

    def group_ends(self) -> Tensor:
        """(e,) int32 end row of each expert's group in ``order``, for the ``grouped_mm``
        kernel: the dropped assignments come after the last end."""
        return self.counts.cumsum(0).to(torch.int32)


def one_hot(index: Tensor, num_classes: int) -> Tensor:
    """(s,) -> (s, num_classes) bool. F.one_hot and bincount read the largest index back
    to the host on CUDA; a comparison does not."""
    return index.unsqueeze(-1) == torch.arange(num_classes, device=index.device)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """x[index] along dim 0. On CPU through index_select, whose backward (an index_add) is ~3x
    faster there than the accumulating index_put behind advanced indexing; elsewhere through
    advanced indexing, whose backward stays deterministic on CUDA where index_add's atomics are
    not (top-k > 1 gathers every token k times)."""
    return x.index_select(0, index) if x.device.type == "cpu" else x[index]


def capacity(capacity_factor: float, valid: Tensor, top_k: int, num_experts: int) -> Tensor:
    """Per-expert capacity ceil(capacity_factor * k * valid_tokens / e), as a tensor (no sync)."""
    return torch.ceil(capacity_factor * top_k * valid.sum() / num_experts)


def plan_dispatch(
    expert_index: Tensor, valid: Tensor, num_experts: int, expert_capacity: Tensor | None
) -> DispatchPlan:
    """Plan which assignments run on which expert.

    expert_index: (n, k) router choices; valid: (n,) False for padding, which is never routed;
    expert_capacity: max assignments per expert, or None for dropless.
    """
    n, k = expert_index.shape
    target = expert_index.t().reshape(-1)  # (s,) rank-major
    dropped = torch.full_like(target, num_experts)
    real = valid.repeat(k)  # (s,)
    target = torch.where(real, target, dropped)
    if expert_capacity is not None:
        arrivals = one_hot(target, num_experts + 1).long()  # (s, e + 1)
        position = (arrivals.cumsum(0) * arrivals).sum(-1) - 1  # (s,) arrival position at its expert
        target = torch.where(position < expert_capacity, target, dropped)
    order = torch.argsort(target, stable=True)
    counts = one_hot(target, num_experts).sum(0)  # (e,)
    overflow = real & (target == num_experts)
    return DispatchPlan(order=order, counts=counts, num_tokens=n, sorted_expert=target[order], overflow=overflow)


def gate_rows(expert_out: Tensor, kept: Tensor, gates: Tensor) -> Tensor:
    """Each kept assignment's output times its gate: expert_out (kept, d) in the kept order,
    gates (n, k) -> (kept, d)."""
    return expert_out * gates.t().reshape(-1)[kept].unsqueeze(-1).to(expert_out.dtype)


def scatter_slots(rows: Tensor, kept: Tensor, num_tokens: int, top_k: int) -> Tensor:
    """Sum a token's k kept rows (kept, d) into its output (n, d); tokens with none get zero.
    Scatters into an (s, d) buffer and sums over k instead of index_add, so the result is
    deterministic on every device. The copy goes into the zero buffer in place: index_copy would
    first copy the whole buffer."""
    slots = rows.new_zeros(top_k * num_tokens, rows.shape[-1]).index_copy_(0, kept, rows)  # (s, d)
    return slots if top_k == 1 else slots.view(top_k, num_tokens, rows.shape[-1]).sum(0)  # (n, d)
