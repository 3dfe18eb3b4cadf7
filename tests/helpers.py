"""Compose the project's Hydra configs in tests, the way train.py would."""

import lightning.pytorch as pl

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
