"""Parameter counts a run reports: total, active per token, hypernetwork."""

from torch import nn

from hypermoe.moe import HyperMoE
from hypermoe.moe.build import count_parameters, hyper_parameters
from hypermoe.moe.collect import moe_layers


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``active_per_token`` leaves out what each layer's ``inactive_parameters_per_token()``
    says a token does not use (a sparse layer: the N - k experts it does not visit); a layer
    without that method, a dense MoE's, uses all. ``hypernetwork`` counts HyperMoE's added
    parts (shared hypernetwork once, plus each layer's expert embeddings and MLP)."""
    total = count_parameters(model)
    inactive = sum(
        layer.inactive_parameters_per_token()
        for _, layer in moe_layers(model)
        if hasattr(layer, "inactive_parameters_per_token")
    )
    hyper_layers = [module for module in model.modules() if isinstance(module, HyperMoE)]
    return {"total": total, "active_per_token": total - inactive, "hypernetwork": hyper_parameters(hyper_layers)}
