"""The LightningModule: task loss + weighted aux losses of every MoE layer, metrics, logging."""

import random
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from transformers import get_linear_schedule_with_warmup

from hypermoe.backbones.heads import task_loss
from hypermoe.data.metrics import build_metrics, predictions
from hypermoe.data.tasks import Task
from hypermoe.moe import sum_aux_losses, weighted_aux_loss

_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "span_masks", "num_choices")


class MoELitModule(pl.LightningModule):
    """Trains ``net`` (a MoEClassifier) on ``task``.

    Logs ``train/loss`` (total), ``train/task_loss``, ``train/aux/<name>`` (unweighted, summed
    over layers), ``val/loss``, ``val/<metric>`` and ``val/<metric>_best``, and every
    ``routing_log_every`` steps ``moe/layer{i}/<stat>``.
    """

    def __init__(
        self,
        net: nn.Module,
        task: Task,
        aux_loss_coefficients: dict[str, float],
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_ratio: float,
        routing_log_every: int = 50,
        run_info: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.net, self.task = net, task
        self.aux_loss_coefficients = dict(aux_loss_coefficients)
        self.optimizer_factory, self.warmup_ratio = optimizer, warmup_ratio
        self.routing_log_every = routing_log_every
        self.run_info = run_info or {}  # resolved config, seed, git revision: stored in checkpoints
        self.val_metrics = build_metrics(task, prefix="val/")
        self.val_best = nn.ModuleDict({name: MaxMetric() for name in task.metrics})
        for best in self.val_best.values():
            best.persistent(True)  # resumed runs keep their best so far
        self.val_loss = MeanMetric()

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.net(**{key: batch[key] for key in _INPUTS if key in batch})

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self(batch)
        loss_task = task_loss(logits, batch["labels"], self.task.kind)
        aux = sum_aux_losses(self.net.moe)
        loss = loss_task + weighted_aux_loss(aux, self.aux_loss_coefficients).to(loss_task.device)
        size = batch["labels"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/task_loss", loss_task, batch_size=size)
        for name, value in aux.items():
            self.log(f"train/aux/{name}", value, batch_size=size)
        if self.global_step % self.routing_log_every == 0:
            self._log_routing_stats()
        return loss

    def _log_routing_stats(self) -> None:
        for block, layer in zip(self.net.moe_blocks, self.net.moe, strict=True):  # named by encoder block
            for name, value in layer.routing_stats.items():
                if value.dim() == 0:
                    self.log(f"moe/layer{block}/{name}", value)
                else:  # per-expert load: its extremes
                    self.log(f"moe/layer{block}/{name}_max", value.max())
                    self.log(f"moe/layer{block}/{name}_min", value.min())

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch)
        self.val_loss.update(task_loss(logits, batch["labels"], self.task.kind), weight=batch["labels"].shape[0])
        self.val_metrics.update(predictions(logits, self.task.kind), batch["labels"], groups=batch.get("groups"))

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        # the metrics are already reduced over processes; sync_dist only silences DDP's warning
        self.log("val/loss", self.val_loss.compute(), sync_dist=True)
        self.val_loss.reset()
        for name in self.task.metrics:
            value = values[f"val/{name}"]
            self.log(f"val/{name}", value, prog_bar=name == self.task.main_metric, sync_dist=True)
            if not self.trainer.sanity_checking:
                self.val_best[name].update(value)
                self.log(f"val/{name}_best", self.val_best[name].compute(), sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=self._parameter_groups())
        total = self.trainer.estimated_stepping_batches
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """Weight decay on matrices only: biases and LayerNorm weights are not decayed (the BERT recipe)."""
        decay, no_decay = [], []
        for parameter in self.parameters():
            if parameter.requires_grad:
                (decay if parameter.dim() >= 2 else no_decay).append(parameter)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def on_train_epoch_start(self) -> None:
        # Every epoch draws its dropout (and any router noise) from a stream fixed by
        # (seed, epoch), so a run resumed at an epoch boundary repeats the original exactly.
        seed = int(self.run_info.get("seed", 0)) * 100_003 + self.current_epoch
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hypermoe"] = self.run_info
