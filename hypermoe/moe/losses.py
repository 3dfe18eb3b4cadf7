"""Auxiliary router losses, as pure functions with the paper equation in each docstring.

Shape legend: n tokens (flattened batch*seq), e experts, k experts selected per token.
Every function takes ``valid`` (n,) bool so padding tokens never count; all returned
values are unweighted scalars (the caller applies coefficients in one place).
"""

import torch
from torch import Tensor
from torch.distributions.normal import Normal


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` (n, ...) over the valid rows; 0 when no row is valid."""
    weights = valid.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1)))
    return (values * weights).sum(0) / valid.sum().clamp(min=1)


def load_balancing_loss(probs: Tensor, expert_index: Tensor, valid: Tensor, num_groups: int) -> Tensor:
    """Switch Transformer balance loss (Fedus et al. 2021, eq. 4), averaged over groups of tokens:
    ``(1 / G) sum_g N * sum_i f_{g,i} * P_{g,i}``.

    The n tokens form ``num_groups`` = G groups of n / G consecutive tokens (G = 1: the whole
    batch; G = b: each sequence, as transformers' ``load_balancing_loss_func``). f_{g,i} is the
    fraction of group g's (token, slot) assignments the router sent to expert i, taken before
    capacity drops as in Switch; P_{g,i} is the mean router probability of expert i over group g.
    Both run over the valid tokens only, and a group without one is left out of the mean.
    Uniform routing gives the minimum value 1.

    probs: (n, e) float32 router probabilities; expert_index: (n, k) chosen experts.
    """
    n, num_experts = probs.shape
    if num_groups < 1 or n % num_groups:
        raise ValueError(f"{n} tokens do not split into num_groups={num_groups} equal groups")
    weight = valid.to(probs.dtype).unsqueeze(-1)  # (n, 1)
    chosen = torch.zeros_like(probs).scatter_(1, expert_index, 1.0)  # (n, e)
    routed = (chosen * weight).view(num_groups, -1, num_experts).sum(1)  # (G, e)
    prob_sum = (probs * weight).view(num_groups, -1, num_experts).sum(1)  # (G, e)
    tokens = weight.view(num_groups, -1).sum(1)  # (G,) valid tokens per group
    fraction = routed / (tokens.clamp(min=1) * expert_index.shape[-1]).unsqueeze(-1)
    mean_prob = prob_sum / tokens.clamp(min=1).unsqueeze(-1)
    per_group = num_experts * (fraction * mean_prob).sum(-1)  # (G,), 0 for a group without valid tokens
    return per_group.sum() / (tokens > 0).sum().clamp(min=1)


def router_z_loss(logits: Tensor, valid: Tensor) -> Tensor:
    """Router z-loss (Zoph et al. 2022, ST-MoE eq. 5): mean over tokens of logsumexp(z)^2."""
    return masked_mean(torch.logsumexp(logits.float(), dim=-1).square(), valid)


def cv_squared(values: Tensor) -> Tensor:
    """Squared coefficient of variation Var(x) / Mean(x)^2 (Shazeer et al. 2017, eq. 6-7).

    Uses the unbiased variance as the authors' reference code; 0 for a single value, and
    the 1e-10 guard keeps an all-zero vector (no valid token) at 0 instead of NaN.
    """
    if values.numel() <= 1:
        return values.new_zeros(())
    values = values.float()
    return values.var() / (values.mean().square() + 1e-10)


def importance(gates: Tensor, valid: Tensor) -> Tensor:
    """Importance(X)_i = sum over valid tokens of the gate value of expert i (Shazeer eq. 6).

    gates: (n, e) dense gate matrix (zero for unselected experts).
    """
    return (gates * valid.unsqueeze(-1).to(gates.dtype)).sum(0)


def smooth_load(
    clean_logits: Tensor,
    noisy_logits: Tensor,
    noise_std: Tensor,
    top_logits: Tensor,
    top_k: int,
    valid: Tensor,
) -> Tensor:
    """Differentiable load estimator of noisy top-k gating (Shazeer eq. 8-10).

    Load(X)_i = sum_x P(x, i), with P(x, i) = Phi((clean_i - kth_excluding_i) / noise_std_i):
    the probability that expert i stays in the top k when only its own noise is redrawn.

    clean_logits, noisy_logits, noise_std: (n, e); top_logits: (n, k+1) largest noisy
    logits, sorted descending.
    """
    # If expert i is currently in the top k, the threshold it must beat is the (k+1)-th
    # largest noisy logit; otherwise it is the k-th.
    threshold_if_in = top_logits[:, top_k : top_k + 1]  # (n, 1)
    threshold_if_out = top_logits[:, top_k - 1 : top_k]  # (n, 1)
    is_in = noisy_logits > threshold_if_in
    normal = Normal(torch.zeros((), device=clean_logits.device), torch.ones((), device=clean_logits.device))
    prob_if_in = normal.cdf((clean_logits - threshold_if_in) / noise_std)
    prob_if_out = normal.cdf((clean_logits - threshold_if_out) / noise_std)
    prob_in_top_k = torch.where(is_in, prob_if_in, prob_if_out)  # (n, e)
    return (prob_in_top_k * valid.unsqueeze(-1).to(prob_in_top_k.dtype)).sum(0)


def hard_load(gates: Tensor, valid: Tensor) -> Tensor:
    """Load(X)_i = number of valid tokens with a non-zero gate for expert i (not differentiable)."""
    return ((gates > 0) & valid.unsqueeze(-1)).sum(0).float()
