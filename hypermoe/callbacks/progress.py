"""Training progress for a terminal and for a log file. Lightning's rich bar redraws itself in place,
which only a terminal shows: written to a log file or a SLURM job's output it prints nothing until
training ends. There the run logs one plain line every few steps and one after each validation."""

import logging
import sys
import time
from datetime import timedelta

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from hypermoe.moe.checks import check_integer

log = logging.getLogger(__name__)


def progress_bar(every_n_steps: int) -> ProgressBar:
    """The rich bar when stdout is a terminal, else ``ProgressLines`` (Lightning takes one progress bar)."""
    if sys.stdout.isatty():
        return RichBar()
    return ProgressLines(every_n_steps)


class RichBar(RichProgressBar):
    """Lightning's rich bar without ``v_num``, the logger's version number (0.000 for the CSV logger)."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class ProgressLines(ProgressBar):
    """Logs ``step <done>/<total>  epoch <e>/<epochs>  train/loss <x>  <rate> steps/s  elapsed <h:mm:ss>``
    every ``every_n_steps`` optimizer steps, or every tenth of the run's steps where that is fewer
    (a 48-step run with the default 50 would log none), and the metrics after each validation of
    training (eval.py logs its own)."""

    def __init__(self, every_n_steps: int) -> None:
        super().__init__()
        check_integer("callbacks.progress_bar.every_n_steps", every_n_steps, lowest=1)
        self.every_n_steps = every_n_steps
        self._interval = every_n_steps  # steps between lines, set for the run at its start
        self._enabled = True
        self._started = 0.0  # when the trainer set up (fit, validate)
        self._last = (0, 0.0)  # the step and time of the last line, for the rate since then

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._started = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = (trainer.global_step, time.perf_counter())  # a resumed run starts at its checkpoint's step
        total = trainer.estimated_stepping_batches  # inf when neither max_steps nor max_epochs bounds it
        tenth = max(1, int(total) // 10) if total != float("inf") else self.every_n_steps
        self._interval = min(self.every_n_steps, tenth)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        step = trainer.global_step  # optimizer steps: unchanged over the batches a step accumulates
        if not self._enabled or step == self._last[0] or step % self._interval:
            return
        now = time.perf_counter()
        rate = (step - self._last[0]) / max(now - self._last[1], 1e-9)
        self._last = (step, now)
        total = trainer.estimated_stepping_batches
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        train = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k.startswith("train/")}
        log.info(
            "step %d/%s  epoch %d%s  %s%.2f steps/s  elapsed %s",
            step, int(total) if total != float("inf") else "?", trainer.current_epoch + 1, epochs,
            _metrics(train), rate, _elapsed(now - self._started),
        )  # fmt: skip

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        val = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        log.info(
            "validation at step %d (epoch %d): %selapsed %s",
            trainer.global_step, trainer.current_epoch + 1, _metrics(val),
            _elapsed(time.perf_counter() - self._started),
        )  # fmt: skip


def _metrics(metrics: dict) -> str:
    """``name value`` pairs, each followed by two spaces."""
    return "".join(f"{name} {float(value):.4g}  " for name, value in sorted(metrics.items()))


def _elapsed(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
