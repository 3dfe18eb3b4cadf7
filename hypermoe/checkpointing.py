"""Checkpoints that a kill cannot corrupt, and the last.ckpt a killed run resumes from."""

import os
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its target, flushes it to disk, and renames
    it over the target: a run killed while saving keeps the previous checkpoint whole. (Lightning's
    own save goes through fsspec, whose temporary file sits in the system temp folder, so its final
    move may be a copy that a kill cuts short.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        folder = os.open(path.parent, os.O_RDONLY)
        try:  # the rename itself survives a power cut once the folder is flushed
            os.fsync(folder)
        finally:
            os.close(folder)


class LastCheckpoint(Checkpoint):
    """``last.ckpt``, the file to resume from: written every ``every_n_train_steps`` training
    steps (0: never inside an epoch) and at the end of every training epoch, after its
    validation. (Lightning's ModelCheckpoint takes a step or an epoch frequency, not both; as a
    ``Checkpoint`` this runs where ModelCheckpoint does, after the epoch is counted as done.)"""

    def __init__(self, dirpath: str, every_n_train_steps: int = 0):
        if every_n_train_steps is None or every_n_train_steps < 0:
            raise ValueError(f"checkpoint_every_n_steps must be an integer >= 0, got {every_n_train_steps!r}")
        self.dirpath, self.every_n_train_steps = Path(dirpath), every_n_train_steps
        self.last_model_path = ""
        self._last_global_step_saved = -1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        # once per optimizer step (gradient accumulation repeats a step), never in a dry run
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step == self._last_global_step_saved:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)
        self.last_model_path, self._last_global_step_saved = str(path), trainer.global_step
