"""Collect what the MoE layers of a model recorded, and weight aux losses in one place."""

from collections.abc import Mapping

import torch
from torch import Tensor, nn


def moe_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every outermost module that follows the MoE layer protocol (records ``aux_losses``),
    in order; the expert FFNs inside a MoE layer are parts of it, not layers of their own."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():  # parents come before their children
        inside_found = any(parent == "" or name.startswith(f"{parent}.") for parent, _ in found)
        if hasattr(module, "aux_losses") and not inside_found:
            found.append((name, module))
    return found


def sum_aux_losses(model: nn.Module) -> dict[str, Tensor]:
    """Unweighted aux losses summed over layers, by name (``balance``, ``z``, ...).

    With gradients on, a training layer with trainable parameters whose aux loss carries no
    gradient is an error: that layer's forward ran without autograd (reentrant gradient
    checkpointing runs it under ``no_grad`` and records the graph only when it recomputes in the
    backward), so its router would silently get no aux-loss gradient.
    """
    totals: dict[str, Tensor] = {}
    for layer_name, layer in moe_layers(model):
        for name, value in layer.aux_losses.items():
            if torch.is_grad_enabled() and layer.training and not value.requires_grad and _trainable(layer):
                raise RuntimeError(
                    f"the aux loss {name!r} of MoE layer {layer_name!r} carries no gradient: the layer ran "
                    "without autograd, as under reentrant gradient checkpointing. Checkpoint with use_reentrant=False "
                    "(in transformers: activation_checkpointing_kwargs={'use_reentrant': False}, "
                    "gradient_checkpointing_kwargs in older versions)"
                )
            totals[name] = totals[name] + value if name in totals else value
    return totals


def _trainable(module: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in module.parameters())


def weighted_aux_loss(aux_losses: Mapping[str, Tensor], coefficients: Mapping[str, float]) -> Tensor:
    """sum_name coefficients[name] * aux_losses[name].

    A recorded loss without a coefficient is an error, so no aux loss is ever silently off
    (set its coefficient to 0.0 to switch it off on purpose).
    """
    missing = sorted(set(aux_losses) - set(coefficients))
    if missing:
        raise KeyError(f"no coefficient for aux losses {missing}; coefficients given: {sorted(coefficients)}")
    total = torch.zeros(())
    for name, value in aux_losses.items():
        total = total.to(value.device) + coefficients[name] * value
    return total
