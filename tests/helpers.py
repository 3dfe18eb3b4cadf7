"""Compose the project's Hydra configs in tests, the way train.py would."""

from typing import ClassVar

import lightning.pytorch as pl
import torch

from hypermoe.config import CONF_DIR as CONF  # noqa: F401  (re-exported for the tests)
from hypermoe.config import compose_config  # noqa: F401  (re-exported for the tests)

# a quiet run of the tiny random backbone
QUIET = ["logger=none", "~callbacks.rich_progress_bar", "+trainer.enable_progress_bar=false"]
TINY = ["backbone=bert_tiny", *QUIET]


class StopAfterEpochs(pl.Callback):
    """Ends fit after ``epochs`` epochs without changing the schedule the configured (longer)
    run computed: a stand-in for a run killed at an epoch boundary."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class PoisonRouterAt(pl.Callback):
    """Sets the first MoE layer's router weights to NaN before training step ``step``: a stand-in
    for a run that diverges there."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.net.moe[0].router.weight.fill_(float("nan"))


class SavedSteps(pl.Callback):
    """Records the global step of every checkpoint the trainer writes (class-level: the run
    builds its own instance from the config)."""

    steps: ClassVar[list[int]] = []

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        SavedSteps.steps.append(checkpoint["global_step"])
