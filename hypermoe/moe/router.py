"""Routers: token -> (top-k experts, combine gates), computed in float32, plus their aux losses.

Shape legend: n tokens, d d_model, e experts, k experts selected per token.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypermoe.moe import losses
from hypermoe.moe.checks import check_choice, check_positive, check_top_k

GATINGS = ("switch", "renorm", "noisy")
# The tokens the Switch balance loss is taken over: each sequence (transformers'
# load_balancing_loss_func), or the whole batch at once.
BALANCE_GROUPS = ("sequence", "batch")
# The aux losses the routers record, by name: what model.aux_loss_coefficients weighs.
AUX_LOSSES = ("balance", "z", "cv_importance", "cv_load")


@dataclass
class Routing:
    """One routing decision. ``probs`` is the softmax of the clean logits (for stats)."""

    logits: Tensor  # (n, e) float32, the logits the selection was made on
    probs: Tensor  # (n, e) float32
    expert_index: Tensor  # (n, k) int64, best first
    gates: Tensor  # (n, k) float32 combine weights
    aux_losses: dict[str, Tensor]  # unweighted


def _fp32_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T in float32 even under autocast (router numerics, Switch 'selective precision')."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.linear(x.float(), weight.float(), None if bias is None else bias.float())


class SwitchRouter(nn.Module):
    """Switch / GShard style: p = softmax(W_r x); the k largest p are the gates, unnormalised.

    With k = 1 this is Switch's top-1 probability scaling; with k = e it weights every expert
    by its softmax probability, i.e. a dense MoE. Optional multiplicative jitter
    U(1 - eps, 1 + eps) on the router input, in training only.
    Aux losses: ``balance`` (Switch load balancing, over each sequence or over the whole batch as
    ``balance_group`` says) and ``z`` (router z-loss).

    ``renormalize``: the gates are the top-k probabilities over their sum, so they sum to 1 and a
    layer of identical (upcycled) experts outputs exactly its dense FFN, with the sum held constant
    in backward: g_i = p_i / stopgrad(sum_{j in top-k} p_j). At top-1 the gate is 1 in the forward
    pass and its gradient is that of the router probability (over the constant p), a
    straight-through gate; a plain renormalisation (noisy gating, Mixtral) is the constant 1 there
    and gives the router no task gradient at all.
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        top_k: int,
        jitter_eps: float | None = None,
        renormalize: bool = False,
        balance_group: str = "batch",
    ):
        super().__init__()
        check_positive("d_model", d_model)
        check_top_k(top_k, num_experts)
        check_choice("balance_group", balance_group, BALANCE_GROUPS)
        if jitter_eps is not None and not 0.0 <= jitter_eps < 1.0:
            raise ValueError(f"jitter_eps must be in [0, 1) or None, got {jitter_eps!r}")
        self.num_experts, self.top_k, self.jitter_eps = num_experts, top_k, jitter_eps
        self.renormalize, self.balance_group = renormalize, balance_group
        self.weight = nn.Parameter(torch.empty(num_experts, d_model))
        nn.init.normal_(self.weight, std=d_model**-0.5)

    def forward(self, x: Tensor, valid: Tensor, num_sequences: int = 1) -> Routing:
        """x (n, d): the tokens of ``num_sequences`` sequences of equal length, one after another."""
        if self.training and self.jitter_eps:
            x = x.float() * torch.empty_like(x, dtype=torch.float32).uniform_(1 - self.jitter_eps, 1 + self.jitter_eps)
        logits = _fp32_linear(x, self.weight)  # (n, e)
        probs = logits.softmax(dim=-1)
        gates, expert_index = probs.topk(self.top_k, dim=-1)  # (n, k)
        if self.renormalize:
            gates = gates / gates.detach().sum(dim=-1, keepdim=True)
        groups = num_sequences if self.balance_group == "sequence" else 1
        aux = {
            "balance": losses.load_balancing_loss(probs, expert_index, valid, groups),
            "z": losses.router_z_loss(logits, valid),
        }
        return Routing(logits, probs, expert_index, gates, aux)


class NoisyTopKRouter(nn.Module):
    """Noisy top-k gating (Shazeer et al. 2017): zero-initialised gate and noise weights.

    Training: H(x) = x W_g + eps * (softplus(x W_noise) + noise_epsilon), eps ~ N(0, 1);
    eval: H(x) = x W_g. Gates = softmax over the k largest H. Aux losses: ``cv_importance``
    and ``cv_load`` (CV^2 of importance and of the smooth load estimate).
    """

    def __init__(self, d_model: int, num_experts: int, top_k: int, noise_epsilon: float = 1e-2):
        super().__init__()
        check_positive("d_model", d_model)
        check_top_k(top_k, num_experts)
        if not noise_epsilon >= 0:
            raise ValueError(f"noise_epsilon must be >= 0, got {noise_epsilon!r}")
        self.num_experts, self.top_k, self.noise_epsilon = num_experts, top_k, noise_epsilon
        self.weight = nn.Parameter(torch.zeros(num_experts, d_model))
        self.noise_weight = nn.Parameter(torch.zeros(num_experts, d_model))

    def forward(self, x: Tensor, valid: Tensor, num_sequences: int = 1) -> Routing:
        """x (n, d); ``num_sequences`` is not used: Shazeer's CV^2 losses are over the batch."""
        clean = _fp32_linear(x, self.weight)  # (n, e)
        noisy = self.training
        if noisy:
            noise_std = F.softplus(_fp32_linear(x, self.noise_weight)) + self.noise_epsilon
            logits = clean + torch.randn_like(clean) * noise_std
        else:
            logits = clean
        # k + 1 so the smooth load estimator knows the threshold an expert must beat.
        top_logits, top_index = logits.topk(min(self.top_k + 1, self.num_experts), dim=-1)
        gates = top_logits[:, : self.top_k].softmax(dim=-1)  # (n, k)
        expert_index = top_index[:, : self.top_k]
        dense_gates = torch.zeros_like(clean).scatter(1, expert_index, gates)  # (n, e)
        if noisy and self.top_k < self.num_experts:
            load = losses.smooth_load(clean, logits, noise_std, top_logits, self.top_k, valid)
        else:
            load = losses.hard_load(dense_gates, valid)
        aux = {
            "cv_importance": losses.cv_squared(losses.importance(dense_gates, valid)),
            "cv_load": losses.cv_squared(load),
        }
        return Routing(logits, clean.softmax(dim=-1), expert_index, gates, aux)


def build_router(
    gating: str,
    d_model: int,
    num_experts: int,
    top_k: int,
    jitter_eps: float | None,
    noise_epsilon: float,
    balance_group: str,
) -> nn.Module:
    if gating in ("switch", "renorm"):
        return SwitchRouter(d_model, num_experts, top_k, jitter_eps, gating == "renorm", balance_group)
    if gating == "noisy":
        if jitter_eps is not None:
            raise ValueError("jitter_eps applies to gating='switch' only; noisy gating has its own noise")
        if balance_group != "batch":
            raise ValueError(
                f"balance_group={balance_group!r} applies to the Switch balance loss (gating='switch' or 'renorm'); "
                "noisy gating's CV^2 losses are over the batch: use balance_group='batch'"
            )
        return NoisyTopKRouter(d_model, num_experts, top_k, noise_epsilon)
    raise ValueError(f"gating={gating!r} is not one of {list(GATINGS)}")
