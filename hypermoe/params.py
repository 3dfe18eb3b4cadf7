"""Parameter counts a run reports: total, active per token, hypernetwork."""

from torch import nn

from hypermoe.moe import HyperMoE, TopKMoE
from hypermoe.moe.build import count_parameters, hyper_parameters


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``active_per_token`` leaves out, in every sparse layer, the experts a token does not
    visit (N - k of N); a dense MoE keeps all. ``hypernetwork`` counts HyperMoE's added
    parts (shared hypernetwork once, plus each layer's expert embeddings and MLP)."""
    total = count_parameters(model)
    inactive = sum(
        (module.num_experts - module.top_k) * count_parameters(module.experts.ffns[0])
        for module in model.modules()
        if isinstance(module, TopKMoE)
    )
    hyper_layers = [module for module in model.modules() if isinstance(module, HyperMoE)]
    return {"total": total, "active_per_token": total - inactive, "hypernetwork": hyper_parameters(hyper_layers)}
