"""A run resumed mid-epoch goes on with the training batch after the checkpoint's."""

from typing import Any

import lightning.pytorch as pl

from hypermoe.data.sampling import ResumableDataLoader


class ResumeTrainDataLoader(pl.Callback):
    """Hands the training dataloader's position stored in a checkpoint taken inside an epoch
    (``ResumableDataLoader.state_dict``) to the training dataloader before the first batch is
    drawn, so the resumed run goes on with the next batch.

    A workaround: Lightning passes the position on itself only when it builds the training
    dataloader after restoring the checkpoint, but ``configure_optimizers`` reads
    ``trainer.estimated_stepping_batches`` (the schedule's length), which builds it before, and the
    stored position is then dropped:
    https://github.com/Lightning-AI/pytorch-lightning/issues/20550 (open; a fix is proposed in
    https://github.com/Lightning-AI/pytorch-lightning/pull/21765). Remove it once Lightning
    restores the position itself."""

    def __init__(self) -> None:
        self._states: list[dict[str, int]] = []  # one per training dataloader

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._states = fit_loop.get("state_dict", {}).get("combined_loader", [])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader
        for state in self._states:
            if isinstance(loader, ResumableDataLoader) and state["batches_yielded"] < trainer.num_training_batches:
                loader.load_state_dict(state)
        self._states = []
