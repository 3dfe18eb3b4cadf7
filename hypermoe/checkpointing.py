"""Checkpoints that a kill cannot corrupt, and the last.ckpt a killed run resumes from."""

import os
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from hypermoe.moe.checks import check_integer


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
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a save that was killed
            stale.unlink(missing_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                os.fchmod(handle.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would hide it from other users
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class LastCheckpoint(Checkpoint):
    """``last.ckpt``, the file to resume from: written every ``every_n_train_steps`` optimizer
    steps (0: never inside an epoch), at the end of every training epoch, after its
    validation, and when a SIGTERM stops a single-process run inside an epoch. (Lightning's
    ModelCheckpoint takes a step or an epoch frequency, not both; as a ``Checkpoint`` this
    runs where ModelCheckpoint does, after the epoch is counted as done.) A periodic save
    comes before a validation due at the same step; it is saved again once that validation
    has run, so a run resumed from it does not skip it (a kill during the validation still
    leaves the earlier save). A model whose weights are no longer finite is not saved:
    last.ckpt stays the last good one."""

    def __init__(self, dirpath: str, every_n_train_steps: int = 0):
        check_integer("checkpoint_every_n_steps", every_n_train_steps, lowest=0)
        self.dirpath, self.every_n_train_steps = Path(dirpath), every_n_train_steps
        self.last_model_path = ""
        self._periodic_step: int | None = None  # the step of the last periodic save

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0  # not in the middle of an accumulation
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches  # on_train_epoch_end saves it, validated
        if (
            self.every_n_train_steps
            and stepped
            and not last_of_epoch
            and trainer.global_step % self.every_n_train_steps == 0
        ):
            self._save(trainer, pl_module)
            self._periodic_step = trainer.global_step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._periodic_step == trainer.global_step:  # with its results, and its loop's record that it ran
            self._save(trainer, pl_module)
        self._periodic_step = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # A SIGTERM (scancel, a preemption) stops training between two steps: saved there, the run
        # resumes where it stopped, not at the last periodic checkpoint. Not during validation,
        # after the epoch loop (the epoch's own checkpoint is saved) or inside a gradient
        # accumulation; and not under DDP, where the ranks may stop at different steps and the
        # save's barrier would wait for a rank that is elsewhere.
        epoch = trainer.fit_loop.epoch_progress.current
        batches = trainer.fit_loop.epoch_loop.batch_progress.current
        if (
            isinstance(exception, SIGTERMException)
            and trainer.world_size == 1
            and trainer.training
            and epoch.processed < epoch.started
            and batches.completed > 0
            and batches.completed % trainer.accumulate_grad_batches == 0
        ):
            self._save(trainer, pl_module)

    def _save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        bad = [name for name, parameter in pl_module.named_parameters() if not torch.isfinite(parameter).all()]
        if bad:
            rank_zero_warn(
                f"not saving step {trainer.global_step}: {len(bad)} parameters are not finite ({bad[0]}, ...)"
            )
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        self.last_model_path = str(path)


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose record of the best checkpoints survives a run folder moved
    or copied before a resume. The record names the files by the folder they were saved in, and
    Lightning drops it where that differs from the folder the resumed run writes to: the next
    validation then counts as the best whatever its score, and the best epoch's file stays beside
    it unrecorded. Where every file the record names is in the new folder, it is read as naming them."""

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's: checkpoints saved with either class resume with the other."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_in = state_dict.get("dirpath")
        if saved_in and self.dirpath and saved_in != self.dirpath:
            moved = _moved_record(state_dict, Path(saved_in), Path(self.dirpath))
            state_dict = moved if moved is not None else state_dict
        super().load_state_dict(state_dict)


def _moved_record(state_dict: dict[str, Any], old: Path, new: Path) -> dict[str, Any] | None:
    """``state_dict`` with its paths under ``old`` moved under ``new``; None where a file is not there."""

    def move(path: str) -> str:
        return str(new / Path(path).name) if path and Path(path).parent == old else path

    paths = [state_dict.get(key, "") for key in ("best_model_path", "kth_best_model_path")]
    paths += list(state_dict.get("best_k_models", {}))
    if not all(Path(move(path)).is_file() for path in paths if path):
        return None
    moved = {**state_dict, "dirpath": str(new)}
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in state_dict:
            moved[key] = move(state_dict[key])
    moved["best_k_models"] = {move(path): score for path, score in state_dict.get("best_k_models", {}).items()}
    return moved


def last_saved_checkpoint(trainer: pl.Trainer) -> str | None:
    """The checkpoint a stopped run resumes from: the last one this run saved, else the one it resumed from."""
    saved = [getattr(callback, "last_model_path", "") for callback in trainer.checkpoint_callbacks]
    return next((path for path in [*saved, trainer.ckpt_path] if path), None)


def remove_checkpoints(trainer: pl.Trainer, resumed_from: str | None = None) -> list[Path]:
    """Delete the checkpoint files this run's checkpoint callbacks list (best-k and last), and
    ``resumed_from`` when it lies in one of their folders; return them.
    Nothing else in those folders is touched."""
    named: set[str] = set()
    folders = set()
    for callback in trainer.checkpoint_callbacks:
        named.update(getattr(callback, "best_k_models", {}))
        named.add(getattr(callback, "last_model_path", ""))
        if getattr(callback, "dirpath", None):
            folders.add(Path(callback.dirpath).resolve())
    if resumed_from and Path(resumed_from).resolve().parent in folders:
        named.add(str(resumed_from))  # a resume that saved nothing new would leave it there
    removed = sorted({Path(name).resolve() for name in named if name and Path(name).is_file()})
    for path in removed:
        path.unlink()
    return removed
