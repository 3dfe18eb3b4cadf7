"""``eval.py split=test``: a trained classifier, or a text-to-text model's generated labels,
predicts its task's test split, whose labels are private, and writes the benchmark's submission
file (``hypermoe.data.submission``).
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
from hypermoe.data.sources import load_split
from hypermoe.data.submission import write_submission
from hypermoe.data.tasks import get_task
from hypermoe.data.text2text import as_pair_of, most_frequent_target, parse_label, to_text_pair
from hypermoe.errors import ConfigError
from hypermoe.lit_module import ClassifierLitModule, Seq2SeqLitModule

log = logging.getLogger(__name__)


def check_can_predict(trainer: pl.Trainer, module: Any, split: str) -> None:
    """Submissions come from the classification heads or the text-to-text models' generated labels
    of GLUE / SuperGLUE tasks, one process predicting every row in order."""
    text_to_text_labels = type(module) is Seq2SeqLitModule and module.classifies
    if type(module) is not ClassifierLitModule and not text_to_text_labels:
        raise ConfigError(
            f"split={split} predicts GLUE / SuperGLUE labels, with a classification head (MiniLM, BERT) or a "
            f"text-to-text model (Switch); this checkpoint trains a {type(module).__name__} on "
            f"{module.task.qualified_name}: use split=validation"
        )
    if trainer.world_size > 1:
        raise ConfigError(f"split={split} predicts in one process: use trainer=cpu or trainer.devices=1")


def predict(trainer: pl.Trainer, module: Any, data: TaskDataModule, examples: list[Example]) -> Tensor:
    """The module's prediction (class index, or score) for every example, in order, in Lightning's
    predict loop (eval mode, no gradients, the trainer's device and precision): a classifier's
    forward pass (the default ``predict_step``), or the label a text-to-text model's generated
    text names (``Seq2SeqLitModule.predict_step``)."""
    if isinstance(module, Seq2SeqLitModule):
        module.prediction_generation = data.generation_kwargs
    outputs = trainer.predict(module, dataloaders=data.prediction_dataloader(examples))
    if isinstance(module, Seq2SeqLitModule):
        labels = [label for batch in outputs for label in batch]
        return named_labels(data, labels, module.run_info.get("majority_target"))
    return torch.cat([predictions(logits, module.task.kind).cpu() for logits in outputs])


def named_labels(data: TaskDataModule, labels: list[int | float | None], majority_target: str | None) -> Tensor:
    """Generated labels with each output that names none (None) replaced by the most frequent label
    of the training examples (``majority_target``, recorded in the checkpoint; a checkpoint from
    before it was: of the task's training file), their count logged."""
    unnamed = sum(label is None for label in labels)
    if unnamed:
        if majority_target is None:
            train = load_split(data.task, "train", data.data_dir)
            majority_target = most_frequent_target(to_text_pair(data.task, example) for example in train)
        fallback = parse_label(data.task, majority_target)
        log.warning(
            "%s: %d of %d generated outputs name no label; written as the most frequent training label %r",
            data.task.qualified_name, unnamed, len(labels), fallback,
        )  # fmt: skip
        labels = [fallback if label is None else label for label in labels]
    return torch.tensor(labels, dtype=torch.float if data.task.kind == "regression" else torch.long)


def predict_test_split(
    trainer: pl.Trainer, module: ClassifierLitModule | Seq2SeqLitModule, data: TaskDataModule, output_dir: Path
) -> dict:
    """Predicts the task's test split and writes its submission file into ``output_dir``."""
    check_can_predict(trainer, module, "test")
    if "test" not in data.task.files:
        raise ConfigError(f"split=test: {data.task.qualified_name} has no test split to submit: use split=validation")
    examples = data.examples("test")
    path = write_submission(data.task, examples, predict(trainer, module, data, examples).tolist(), output_dir)
    log.info("%s test: %d rows predicted; wrote %s", data.task.qualified_name, len(examples), path)
    return {"submission": str(path), "rows": len(examples)}


def predict_diagnostic(
    trainer: pl.Trainer,
    module: ClassifierLitModule | Seq2SeqLitModule,
    data: TaskDataModule,
    split: str,
    output_dir: Path,
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
    examples = [as_pair_of(data.task, example) for example, _ in rows]  # a text-to-text model reads their fields
    predicted = diagnostic.relabel(data.task, predict(trainer, module, data, examples))
    task = get_task(*diagnostic.task.split("/"))
    path = write_submission(task, examples, predicted.tolist(), output_dir, diagnostic.submission)
    log.info("%s: %d rows predicted; wrote %s", diagnostic.name, len(rows), path)
    return {"submission": str(path), "rows": len(rows), **diagnostic.score(rows, predicted)}
