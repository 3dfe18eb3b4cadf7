"""``eval.py split=test``: a trained classifier predicts its task's test split, whose labels are
private, and writes the benchmark's submission file (``hypermoe.data.submission``).
``split=ax_b`` / ``split=ax_g``: an RTE model predicts a SuperGLUE diagnostic, ``split=ax`` an MNLI
(or RTE) model GLUE's; each writes its submission file and scores it where its labels are at hand
(``hypermoe.data.diagnostics``)."""

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from hypermoe.data.datamodule import TaskDataModule
from hypermoe.data.diagnostics import DIAGNOSTICS
from hypermoe.data.examples import Example
from hypermoe.data.metrics import predictions
from hypermoe.data.submission import write_submission
from hypermoe.data.tasks import get_task
from hypermoe.errors import ConfigError
from hypermoe.lit_module import ClassifierLitModule

log = logging.getLogger(__name__)


def check_can_predict(trainer: pl.Trainer, module: Any, split: str) -> None:
    """Submissions come from the classification heads, one process predicting every row in order."""
    if type(module) is not ClassifierLitModule:
        raise ConfigError(
            f"split={split} predicts with the classification heads of the encoder backbones (MiniLM, BERT); "
            f"this checkpoint trains a {type(module).__name__}: use split=validation"
        )
    if trainer.world_size > 1:
        raise ConfigError(f"split={split} predicts in one process: use trainer=cpu or trainer.devices=1")


def predict(trainer: pl.Trainer, module: ClassifierLitModule, data: TaskDataModule, examples: list[Example]) -> Tensor:
    """The module's prediction (class index, or score) for every example, in order: its forward
    pass in eval mode without gradients, in Lightning's predict loop (whose default
    ``predict_step`` is the module's forward, on the trainer's device and precision)."""
    outputs = trainer.predict(module, dataloaders=data.prediction_dataloader(examples))
    return torch.cat([predictions(logits, module.task.kind).cpu() for logits in outputs])


def predict_test_split(
    trainer: pl.Trainer, module: ClassifierLitModule, data: TaskDataModule, output_dir: Path
) -> dict:
    """Predicts the task's test split and writes its submission file into ``output_dir``."""
    check_can_predict(trainer, module, "test")
    examples = data.examples("test")
    path = write_submission(data.task, examples, predict(trainer, module, data, examples).tolist(), output_dir)
    log.info("%s test: %d rows predicted; wrote %s", data.task.qualified_name, len(examples), path)
    return {"submission": str(path), "rows": len(examples)}


def predict_diagnostic(
    trainer: pl.Trainer, module: ClassifierLitModule, data: TaskDataModule, split: str, output_dir: Path
) -> dict:
    """Predicts the diagnostic ``split`` (ax_b, ax_g: an RTE head; ax: an MNLI or RTE head), writes
    its submission file into ``output_dir`` and scores it where its labels are at hand."""
    check_can_predict(trainer, module, split)
    diagnostic = DIAGNOSTICS[split]
    if not diagnostic.accepts(data.task):
        raise ConfigError(
            f"split={split} is predicted by a model of {' or '.join(diagnostic.predicted_by)}: "
            f"{data.task.qualified_name} {data.task.signature()} has other labels; use a checkpoint trained on one"
        )
    rows = diagnostic.read(data.data_dir)
    examples = [example for example, _ in rows]
    predicted = diagnostic.relabel(data.task, predict(trainer, module, data, examples))
    task = get_task(*diagnostic.task.split("/"))
    path = write_submission(task, examples, predicted.tolist(), output_dir, diagnostic.submission)
    log.info("%s: %d rows predicted; wrote %s", diagnostic.name, len(rows), path)
    return {"submission": str(path), "rows": len(rows), **diagnostic.score(rows, predicted)}
