"""Compose the project's Hydra configs in tests, the way train.py would, or run train.py itself."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import lightning.pytorch as pl
import torch

from hypermoe.config import CONF_DIR as CONF  # noqa: F401  (re-exported for the tests)
from hypermoe.config import compose_config  # noqa: F401  (re-exported for the tests)

PROJECT = Path(__file__).resolve().parents[1]

# a quiet run of the tiny random backbone
QUIET = ["logger=none", "~callbacks.progress_bar", "+trainer.enable_progress_bar=false"]
TINY = ["backbone=bert_tiny", *QUIET]


class StopAfterEpochs(pl.Callback):
    """Ends fit after ``epochs`` epochs without changing the schedule the configured (longer)
    run computed: a stand-in for a run killed at an epoch boundary."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class WriteFileAtStart(pl.Callback):
    """Writes ``text`` to ``path`` when training starts: a file put beside the run's own while it runs."""

    def __init__(self, path: str, text: str):
        self.path, self.text = Path(path), text

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.write_text(self.text)


class PoisonRouterAt(pl.Callback):
    """Sets the first MoE layer's router weights to NaN before training step ``step``: a stand-in
    for a run that diverges there."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.net.moe[0].router.weight.fill_(float("nan"))


class SigtermAtStep(pl.Callback):
    """Sends this process SIGTERM at a training step, as a scheduler stopping the job would."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class SigtermParentAtStep(SigtermAtStep):
    """Sends the process that started this one (``run_grid.py``, an isolated sweep) SIGTERM at a training step."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getppid(), signal.SIGTERM)


class SavedSteps(pl.Callback):
    """Records, for every checkpoint the trainer writes, its global step and whether it holds a
    validation result (class-level: the run builds its own instance from the config)."""

    saved: ClassVar[list[tuple[int, bool]]] = []

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        validated = bool(torch.isfinite(checkpoint["state_dict"]["val_best.accuracy.max_value"]))
        SavedSteps.saved.append((checkpoint["global_step"], validated))


class CopyLastCheckpoint(pl.Callback):
    """Copies last.ckpt as it is when step ``step`` + 1 starts (what a kill then would leave) to ``copy``."""

    def __init__(self, dirpath: str, step: int, copy: str):
        self.last, self.step, self.copy = Path(dirpath) / "last.ckpt", step, Path(copy)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            self.copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.last, self.copy)


def train_cli(output_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python train.py <overrides>`` writing into ``output_dir``, offline; the tests folder is
    importable, so ``+callbacks.x._target_=helpers.<Callback>`` works there too."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": str(PROJECT / "tests")}  # fmt: skip
    command = [sys.executable, str(PROJECT / "train.py"), f"hydra.run.dir={output_dir}", *overrides]
    return subprocess.run(command, cwd=output_dir, env=env, capture_output=True, text=True, timeout=600)


class SigintAtStep(SigtermAtStep):
    """Sends this process SIGINT at a training step, as Ctrl-C in its terminal would."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class AnyKeywordOptimizer(torch.optim.SGD):
    """An optimizer class that takes any keyword (as wrappers of other optimizers do)."""

    def __init__(self, params, lr: float, **settings):
        super().__init__(params, lr=lr)
