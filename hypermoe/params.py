"""Parameter counts a run reports: total, active per token, hypernetwork."""

from torch import nn

from hypermoe.moe import DenseMoE, HyperMoE, TopKMoE


def _count(parameters) -> int:
    return sum(p.numel() for p in {id(p): p for p in parameters}.values())


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``active_per_token`` leaves out, in every sparse layer, the experts a token does not
    visit (N - k of N); a dense MoE keeps all. ``hypernetwork`` counts HyperMoE's added
    parts (shared hypernetwork once, plus each layer's expert embeddings and MLP)."""
    total = _count(model.parameters())
    inactive, hyper = 0, []
    for module in model.modules():
        if isinstance(module, TopKMoE) and not isinstance(module, DenseMoE):
            per_expert = _count(module.experts.ffns[0].parameters())
            inactive += (module.num_experts - module.top_k) * per_expert
        if isinstance(module, HyperMoE):
            hyper += [*module.hypernetwork.parameters(), *module.selection.parameters()]
    return {"total": total, "active_per_token": total - inactive, "hypernetwork": _count(hyper)}
