"""Stop training at the first step whose loss is NaN or infinite."""

import lightning.pytorch as pl
import torch
from torch import Tensor

from hypermoe.checkpointing import last_saved_checkpoint
from hypermoe.errors import NonFiniteLossError


class NonFiniteLossGuard(pl.Callback):
    """Raises ``NonFiniteLossError`` before the backward pass of a step whose loss is not finite,
    so the weights stay those of the last good step. The message says where the loss broke
    (from what the step logged: ``train/loss``, ``train/task_loss``, ``train/aux/<name>``), what
    each MoE layer's router did in that forward pass, and which checkpoint is kept."""

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if not torch.isfinite(loss):  # one host sync per step: the price of stopping at the first bad step
            raise NonFiniteLossError(_report(trainer, pl_module))


def _report(trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
    logged = trainer.callback_metrics
    aux = {name.removeprefix("train/aux/"): value for name, value in logged.items() if name.startswith("train/aux/")}
    aux_text = ", ".join(f"{name}={float(value):.4g}" for name, value in aux.items()) or "none"
    lines = [
        f"train/loss is {float(logged['train/loss'])} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
        f"task loss {float(logged['train/task_loss'])}, aux losses (unweighted, summed over layers): {aux_text}.",
        "Routing statistics of this step:",
    ]
    for name, layer in zip(pl_module.net.moe_names, pl_module.net.moe, strict=True):
        stats = ", ".join(f"{stat}={_describe(value)}" for stat, value in layer.routing_stats.items())
        lines.append(f"  {name}: {stats or 'no router'}")
    saved = last_saved_checkpoint(trainer)
    lines.append(
        f"The last good checkpoint is {saved}; nothing after it was saved."
        if saved
        else "No checkpoint was saved before this step."
    )
    return "\n".join(lines)


def _describe(value: Tensor) -> str:
    return f"{float(value):.4g}" if value.dim() == 0 else f"max {float(value.max()):.4g} min {float(value.min()):.4g}"
