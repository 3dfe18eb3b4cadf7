"""Every MoE layer's routing statistics of a training step, logged every few steps."""

import lightning.pytorch as pl
from torch import Tensor

from hypermoe.moe.checks import check_integer


class RoutingStatsLogger(pl.Callback):
    """Writes ``moe/<layer name>/<stat>`` (each layer's ``routing_stats`` of the training forward)
    to the loggers every ``every_n_steps`` optimizer steps, under that step; a per-expert statistic
    (the load) as its extremes, ``<stat>_max`` and ``<stat>_min``. Process 0's forward, and under
    gradient accumulation the step's first."""

    def __init__(self, every_n_steps: int):
        check_integer("routing_log_every", every_n_steps, lowest=1)
        self.every_n_steps = every_n_steps
        self._written_step: int | None = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        # Right after the training forward; global_step counts a step once its optimizer has
        # stepped. Written straight to the loggers: pl_module.log would hold the values until
        # Lightning's next write (every log_every_n_steps) and file them under that step, or drop
        # them when the epoch ended first.
        step = trainer.global_step
        if step % self.every_n_steps or step == self._written_step or not trainer.loggers:
            return
        self._written_step = step
        if not trainer.is_global_zero:
            return
        metrics = {}
        for name, layer in zip(pl_module.net.moe_names, pl_module.net.moe, strict=True):
            for stat, value in layer.routing_stats.items():
                if value.dim() == 0:
                    metrics[f"moe/{name}/{stat}"] = value.item()
                else:
                    metrics[f"moe/{name}/{stat}_max"] = value.max().item()
                    metrics[f"moe/{name}/{stat}_min"] = value.min().item()
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
