"""Detached routing statistics, as pure functions.

Shape legend: n tokens, e experts, k experts selected per token.
"""

import torch
from torch import Tensor

from hypermoe.moe.losses import masked_mean


@torch.no_grad()
def router_entropy(probs: Tensor, valid: Tensor) -> Tensor:
    """Mean over valid tokens of the router distribution's entropy -sum_i p_i log p_i, in nats."""
    return masked_mean(-(probs * probs.clamp_min(1e-12).log()).sum(-1), valid)


@torch.no_grad()
def router_logit_max_abs(logits: Tensor, valid: Tensor) -> Tensor:
    """The largest router logit magnitude over valid tokens: what grows before a router diverges
    (NaN when a logit is NaN)."""
    magnitudes = torch.where(valid.unsqueeze(-1), logits.abs(), 0.0)
    return magnitudes.max() if magnitudes.numel() else magnitudes.new_zeros(())  # an empty batch: 0


@torch.no_grad()
def dense_routing_stats(logits: Tensor, probs: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """The keys of ``routing_stats`` for a dense MoE, where every token visits every expert:
    ``load`` is each expert's mean routing weight, nothing is dropped and no expert is dead
    unless its weight vanishes everywhere; ``tokens`` counts the valid tokens."""
    load = masked_mean(probs, valid)  # (e,)
    return {
        "load": load,
        "load_max_min_ratio": load.max() / load.min().clamp(min=1e-12),
        "dead_experts": (load == 0).sum().float(),
        "router_entropy": router_entropy(probs, valid),
        "router_logit_max_abs": router_logit_max_abs(logits, valid),
        "dropped_fraction": load.new_zeros(()),
        "tokens": valid.sum().to(probs.dtype),
    }


@torch.no_grad()
def routing_stats(
    logits: Tensor, probs: Tensor, expert_index: Tensor, kept_counts: Tensor, valid: Tensor
) -> dict[str, Tensor]:
    """Load and health of one routing decision, over valid tokens only.

    - ``load``: (e,) fraction of the router's assignments (before capacity) per expert;
    - ``load_max_min_ratio``: busiest over least busy expert's assignments, the least busy
      counted as at least 1 so a dead expert gives a large finite number, not inf;
    - ``dead_experts``: experts that no valid token chose;
    - ``router_entropy``: mean entropy of the router distribution, in nats;
    - ``router_logit_max_abs``: the largest router logit magnitude;
    - ``dropped_fraction``: share of assignments dropped by the capacity limit;
    - ``tokens``: the valid tokens routed (what weighs ``load`` when forwards are pooled).
    """
    num_experts = probs.shape[-1]
    weights = valid.unsqueeze(-1).expand_as(expert_index).to(probs.dtype)
    assigned = torch.zeros(num_experts, dtype=probs.dtype, device=probs.device)
    assigned.scatter_add_(0, expert_index.reshape(-1), weights.reshape(-1))  # (e,)
    total = assigned.sum()
    return {
        "load": assigned / total.clamp(min=1),
        "load_max_min_ratio": assigned.max() / assigned.min().clamp(min=1),
        "dead_experts": (assigned == 0).sum().float(),
        "router_entropy": router_entropy(probs, valid),
        "router_logit_max_abs": router_logit_max_abs(logits, valid),
        "dropped_fraction": (total - kept_counts.sum()) / total.clamp(min=1),
        "tokens": valid.sum().to(probs.dtype),
    }


@torch.no_grad()
def top_expert(expert_index: Tensor, valid: Tensor) -> Tensor:
    """(n,) each token's first-choice expert, -1 for padding: what a token's routing is compared
    by from one validation to the next."""
    return torch.where(valid, expert_index[:, 0], -1)
