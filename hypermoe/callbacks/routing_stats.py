"""Every MoE layer's routing statistics of a training step, logged every few steps."""

import lightning.pytorch as pl
from torch import Tensor

from hypermoe.moe.checks import check_integer


class RoutingStatsLogger(pl.Callback):
    """Logs ``moe/<layer name>/<stat>`` (each layer's ``routing_stats`` of the training forward)
    every ``every_n_steps`` optimizer steps; a per-expert statistic (the load) as its extremes,
    ``<stat>_max`` and ``<stat>_min``."""

    def __init__(self, every_n_steps: int):
        check_integer("routing_log_every", every_n_steps, lowest=1)
        self.every_n_steps = every_n_steps

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        # right after the training forward, under the step it belongs to: global_step counts
        # a step only once its optimizer has stepped
        if trainer.global_step % self.every_n_steps:
            return
        for name, layer in zip(pl_module.net.moe_names, pl_module.net.moe, strict=True):
            for stat, value in layer.routing_stats.items():
                if value.dim() == 0:
                    pl_module.log(f"moe/{name}/{stat}", value)
                else:
                    pl_module.log(f"moe/{name}/{stat}_max", value.max())
                    pl_module.log(f"moe/{name}/{stat}_min", value.min())
