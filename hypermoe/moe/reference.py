"""A plain top-k MoE and HyperMoE, one token at a time, written to be read rather than run fast.

Each function takes a fast layer (``TopKMoE``, ``HyperMoE``) only as the holder of its
parameters and computes, with the equations of docs/method.md (cited by section), what that
layer outputs and the unweighted aux losses it records: no sorting by expert, no dispatch plan,
no grouping of tokens by expert set. ``tests/test_reference.py`` checks every fast path against
it, outputs and gradients.

Shape legend (docs/method.md, "Notation and shapes"): B sequences, T tokens per sequence,
n = B T tokens, d d_model, f d_ff, N experts, k experts per token, d_e expert-embedding width,
d_s selection width, d_l layer-embedding width, h hypernetwork hidden width, r bottleneck.

What a layer draws at random in training (router jitter, router noise, the ``random``
aggregation's experts) is an argument here, so a caller can hand the fast layer and the
reference the same draw. Dropout is left out: call in eval mode or with dropout 0. Run outside
autocast.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from hypermoe.moe.experts import FFN
from hypermoe.moe.grouped import ACTIVATIONS
from hypermoe.moe.hyper import HyperMoE, HyperNetwork
from hypermoe.moe.layers import TopKMoE
from hypermoe.moe.router import NoisyTopKRouter, SwitchRouter


def topk_moe(
    layer: TopKMoE, x: Tensor, attention_mask: Tensor | None = None, router_noise: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """The output (B, T, d) and aux losses of ``layer`` on x (B, T, d) ("Sparse top-k MoE").

    attention_mask (B, T): True for real tokens, None for none padded. router_noise: the
    router's draw in training, (B, T, d) jitter factors u for ``switch`` / ``renorm`` with
    ``jitter_eps``, (B, T, N) standard normals eps for ``noisy``.
    """
    valid = _valid(x, attention_mask)  # (B, T)
    y, _, _, aux = _topk_moe(layer, x, valid, router_noise)
    return y, aux


def hypermoe(
    layer: HyperMoE,
    x: Tensor,
    attention_mask: Tensor | None = None,
    router_noise: Tensor | None = None,
    random_draw: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The output (B, T, d) and aux losses of ``layer`` on x (B, T, d) ("HyperMoE = the top-k
    MoE layer + a HyperExpert", steps 1-5).

    router_noise: as in ``topk_moe``. random_draw (B, T, N): for ``aggregation="random"``,
    one uniform score per expert and token; a token aggregates the N - k experts with the
    smallest scores. In eval it defaults to the layer's fixed draw; in training pass it.
    """
    valid = _valid(x, attention_mask)  # (B, T)
    B, T, d = x.shape
    y_moe, selected, probs, aux = _topk_moe(layer, x, valid, router_noise)
    if random_draw is None and layer.aggregation == "random":
        if layer.training:
            raise ValueError("aggregation='random' draws afresh in training: pass random_draw")
        # the layer's fixed evaluation draw: a generator seeded with the layer's index
        generator = torch.Generator(x.device).manual_seed(layer.layer_index)
        random_draw = torch.rand(B * T, layer.num_experts, generator=generator, device=x.device).view(B, T, -1)
    tokens = x.reshape(B * T, d)  # (n, d)
    rows = []
    for t in range(B * T):
        if not valid.view(-1)[t]:
            rows.append(torch.zeros_like(tokens[t]))  # padding: no HyperExpert
            continue
        draw = None if random_draw is None else random_draw.reshape(B * T, -1)[t]
        weights = aggregation_weights(layer, selected[t], probs[t], draw)  # (N,)
        selection = selection_embedding(layer, weights.to(x.dtype))  # (d_s,) s_t
        rows.append(hyper_expert(layer.hypernetwork, layer.layer_index, selection, tokens[t]))  # (d,) H_t(x_t)
    y_hyper = torch.stack(rows).view(B, T, d)
    return y_moe + y_hyper, aux  # step 5: y_t = TopKMoE_t(x_t) + H_t(x_t)


def aggregation_weights(layer: HyperMoE, selected: Tensor, probs: Tensor, random_draw: Tensor | None) -> Tensor:
    """(N,) the weight w_j of each expert embedding e_j in token t's selection embedding (step 2).

    selected (k,): S_t; probs (N,): p_t; random_draw (N,): the ``random`` aggregation's scores.
    """
    N, k = layer.num_experts, layer.top_k
    in_selection = torch.zeros(N, dtype=torch.bool, device=selected.device)
    in_selection[selected] = True  # (N,) j in S_t
    if layer.aggregation == "sum":  # the method: the unselected experts U_t
        return (~in_selection).float()
    if layer.aggregation == "mean":  # divided by |U_t| = N - k
        return (~in_selection).float() / max(N - k, 1)
    if layer.aggregation == "gate_weighted":  # each unselected e_j weighted by p_{t,j}
        return (~in_selection).float() * probs
    if layer.aggregation == "all":
        return torch.ones(N, device=selected.device)
    if layer.aggregation == "selected":  # S_t only
        return in_selection.float()
    drawn = random_draw.argsort()[: N - k]  # "random": N - k experts, selected or not
    return torch.zeros(N, device=selected.device).index_fill(0, drawn, 1.0)


def selection_embedding(layer: HyperMoE, weights: Tensor) -> Tensor:
    """s_t = MLP_m(sum_j w_j e^m_j), MLP_m = Linear(d_e, d_e) -> ReLU -> Linear(d_e, d_s) (step 2)."""
    first, _, second = layer.selection.mlp
    aggregated = weights @ layer.selection.expert_embedding  # (d_e,) sum_j w_j e_j, embeddings (N, d_e)
    return F.linear(torch.relu(F.linear(aggregated, first.weight, first.bias)), second.weight, second.bias)  # (d_s,)


def hyper_expert(hypernetwork: HyperNetwork, layer_index: int, selection: Tensor, x: Tensor) -> Tensor:
    """H_t(x_t) for one token x (d,), generated from its selection embedding (d_s,) (steps 3-4)."""
    layer_embedding = hypernetwork.layer_embedding.weight[layer_index]  # (d_l,) l_m
    hidden = hypernetwork.hidden
    u = torch.relu(F.linear(torch.cat([selection, layer_embedding]), hidden.weight, hidden.bias))  # (h,)
    r, d = hypernetwork.bottleneck, hypernetwork.d_model
    # generated weights in nn.Linear's layout (docs/method.md, "Differences", entry 2)
    w_down = _head(hypernetwork.w_down_head, u).view(r, d)  # (r, d)
    b_down = _head(hypernetwork.b_down_head, u)  # (r,)
    w_up = _head(hypernetwork.w_up_head, u).view(d, r)  # (d, r)
    b_up = _head(hypernetwork.b_up_head, u)  # (d,)
    return w_up @ torch.relu(w_down @ x + b_down) + b_up  # (d,) W_up ReLU(W_down x + b_down) + b_up


def expert(ffn: FFN, x: Tensor) -> Tensor:
    """E_i(x) = W_2 act(W_1 x + b_1) + b_2 for one token x (d,) ("Plain FFN", "Experts")."""
    hidden = ACTIVATIONS[ffn.activation](F.linear(x, ffn.fc_in.weight, ffn.fc_in.bias))  # (f,)
    return F.linear(hidden, ffn.fc_out.weight, ffn.fc_out.bias)  # (d,)


def _head(head: torch.nn.Linear, u: Tensor) -> Tensor:
    return F.linear(u, head.weight, head.bias)


def _valid(x: Tensor, attention_mask: Tensor | None) -> Tensor:
    """(B, T) bool: True for a real token."""
    if attention_mask is None:
        return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
    return attention_mask.bool()


def _topk_moe(
    layer: TopKMoE, x: Tensor, valid: Tensor, router_noise: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """y (B, T, d) = sum_{i in S_t, kept} g_{t,i} E_i(x_t) [+ sum_{i in S_t, dropped} g_{t,i} x_t],
    and the routing behind it: S_t (n, k), p_t (n, N), the aux losses."""
    if layer.training and layer.experts.dropout:
        raise ValueError("the reference leaves dropout out: call it in eval mode or with dropout 0")
    B, T, d = x.shape
    tokens = x.reshape(B * T, d)  # (n, d), sequence after sequence
    noise = None if router_noise is None else router_noise.reshape(B * T, -1)
    if isinstance(layer.router, NoisyTopKRouter):
        selected, gates, probs, aux = _noisy_routing(layer.router, tokens, valid, noise)
    else:
        selected, gates, probs, aux = _switch_routing(layer.router, tokens, valid, noise)
    factor = layer.capacity_factor_train if layer.training else layer.capacity_factor_eval
    kept = _kept_assignments(selected, valid.view(-1), layer.num_experts, factor)  # (n, k)
    rows = []
    for t in range(B * T):
        row = torch.zeros_like(tokens[t])  # (d,) padding outputs zero
        for slot in range(layer.top_k if valid.view(-1)[t] else 0):
            gate = gates[t, slot].to(x.dtype)
            if kept[t, slot]:
                row = row + gate * expert(layer.experts.ffns[selected[t, slot]], tokens[t])
            elif layer.dropped_tokens == "input":  # as if its expert were the identity
                row = row + gate * tokens[t]
        rows.append(row)
    return torch.stack(rows).view(B, T, d), selected, probs, aux


def _switch_routing(
    router: SwitchRouter, tokens: Tensor, valid: Tensor, jitter: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """``switch`` and ``renorm`` gating ("Router"): S_t (n, k), g (n, k), p (n, N), aux losses."""
    x = tokens.float()  # (n, d) the router computes in float32
    if router.training and router.jitter_eps:
        if jitter is None:
            raise ValueError("the router jitters its input in training: pass router_noise (B, T, d)")
        x = x * jitter  # u ~ U(1 - eps, 1 + eps), on the router's input only
    logits = F.linear(x, router.weight.float())  # (n, N) z_t = W_r x_t
    probs = logits.softmax(-1)  # (n, N) p_t
    gates, selected = probs.topk(router.top_k, dim=-1)  # (n, k) S_t, best first
    if router.renormalize:  # g_{t,i} = p_{t,i} / stopgrad(sum_{j in S_t} p_{t,j})
        gates = gates / gates.detach().sum(-1, keepdim=True)
    groups = valid.shape[0] if router.balance_group == "sequence" else 1
    aux = {
        "balance": _balance_loss(probs, selected, valid.reshape(groups, -1)),
        "z": _z_loss(logits, valid.view(-1)),
    }
    return selected, gates, probs, aux


def _balance_loss(probs: Tensor, selected: Tensor, valid: Tensor) -> Tensor:
    """A_balance = (1/G') sum_g N sum_i f_{g,i} P_{g,i}, over the G groups of valid (G, n / G)
    that hold a real token ("Router", balance)."""
    N, k = probs.shape[-1], selected.shape[-1]
    per_group = []
    for group, group_valid in enumerate(valid):
        if not group_valid.any():
            continue
        rows = slice(group * valid.shape[1], (group + 1) * valid.shape[1])
        real_probs = probs[rows][group_valid]  # (n_g, N)
        choices = selected[rows][group_valid].reshape(-1)  # (n_g k,) before any capacity drop
        f = torch.bincount(choices, minlength=N).float() / (k * real_probs.shape[0])  # (N,)
        P = real_probs.mean(0)  # (N,)
        per_group.append(N * (f * P).sum())
    return torch.stack(per_group).mean() if per_group else probs.new_zeros(())


def _z_loss(logits: Tensor, valid: Tensor) -> Tensor:
    """A_z = mean over valid tokens of (logsumexp_i z_{t,i})^2 ("Router", z)."""
    if not valid.any():
        return logits.new_zeros(())
    return torch.logsumexp(logits[valid], dim=-1).square().mean()


def _noisy_routing(
    router: NoisyTopKRouter, tokens: Tensor, valid: Tensor, noise: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """``noisy`` gating ("Router", Shazeer et al. 2017): S_t (n, k), g (n, k), p (n, N), aux losses.
    p_t = softmax(W_g x_t), the clean logits' probabilities, is what ``gate_weighted`` uses."""
    x = tokens.float()  # (n, d)
    N, k = router.num_experts, router.top_k
    clean = F.linear(x, router.weight)  # (n, N) W_g x_t
    noisy = router.training
    if noisy:
        if noise is None:
            raise ValueError("noisy gating draws noise in training: pass router_noise (B, T, N)")
        sigma = F.softplus(F.linear(x, router.noise_weight)) + router.noise_epsilon  # (n, N)
        logits = clean + noise * sigma  # (n, N) H_t
    else:
        logits = clean
    top_logits, selected = logits.topk(k, dim=-1)  # (n, k) S_t
    gates = top_logits.softmax(-1)  # (n, k) softmax over the k selected H_t
    valid = valid.view(-1)
    dense_gates = torch.zeros_like(clean).scatter(1, selected, gates)  # (n, N) g_{t,i}, 0 outside S_t
    importance = dense_gates[valid].sum(0)  # (N,)
    # At k = N every expert is always selected: no threshold to beat, the load is the count.
    if noisy and k < N:
        per_token = torch.stack([_smooth_load(clean[t], logits[t], sigma[t], k) for t in range(len(valid))])  # (n, N)
        load = per_token[valid].sum(0)  # (N,)
    else:
        load = torch.bincount(selected[valid].reshape(-1), minlength=N).float()  # (N,) tokens that chose expert i
    aux = {"cv_importance": _cv_squared(importance), "cv_load": _cv_squared(load)}
    return selected, gates, clean.softmax(-1), aux


def _smooth_load(clean: Tensor, logits: Tensor, sigma: Tensor, k: int) -> Tensor:
    """One token's Phi((z_i - threshold_i) / sigma_i) for every expert i (N,), threshold_i the
    k-th largest noisy logit of the other experts (Shazeer eq. 8-10)."""
    normal = torch.distributions.Normal(0.0, 1.0)
    terms = []
    for i in range(len(clean)):
        others = torch.cat([logits[:i], logits[i + 1 :]])  # (N - 1,)
        threshold = others.topk(k).values[-1]
        terms.append(normal.cdf((clean[i] - threshold) / sigma[i]))
    return torch.stack(terms)


def _cv_squared(v: Tensor) -> Tensor:
    """CV^2(v) = Var(v) / (Mean(v)^2 + 1e-10), the unbiased variance; 0 for a single expert."""
    if v.numel() <= 1:
        return v.new_zeros(())
    return v.var() / (v.mean().square() + 1e-10)


def _kept_assignments(selected: Tensor, valid: Tensor, num_experts: int, factor: float | None) -> Tensor:
    """(n, k) bool: whether assignment (t, j) is served ("Dispatch and capacity"). Every expert
    serves at most C = ceil(phi k n_valid / N); first choices before any second choice and,
    within a rank, earlier tokens first. Padding is never an assignment."""
    n, k = selected.shape
    if factor is None:  # dropless
        return valid.unsqueeze(-1).expand(n, k)
    limit = math.ceil(factor * k * int(valid.sum()) / num_experts)
    served = [0] * num_experts
    kept = torch.zeros(n, k, dtype=torch.bool, device=selected.device)
    for slot in range(k):
        for t in range(n):
            chosen = int(selected[t, slot])
            if valid[t] and served[chosen] < limit:
                kept[t, slot] = True
                served[chosen] += 1
    return kept
