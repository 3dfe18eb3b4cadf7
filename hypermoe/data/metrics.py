"""Each task's metrics as the benchmarks define them, built from torchmetrics."""

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryF1Score, MulticlassAccuracy, MulticlassF1Score, MulticlassMatthewsCorrCoef
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from hypermoe.data.tasks import Task


class GroupExactMatch(Metric):
    """MultiRC EM: the share of questions (groups) whose answer options are all predicted right."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, groups: Tensor) -> None:
        self.correct.append(preds == target)
        self.groups.append(groups)

    def compute(self) -> Tensor:
        correct = torch.cat(self.correct) if isinstance(self.correct, list) else self.correct
        groups = torch.cat(self.groups) if isinstance(self.groups, list) else self.groups
        _, group_index = torch.unique(groups, return_inverse=True)
        wrong_per_group = torch.zeros(int(group_index.max()) + 1, device=groups.device)
        wrong_per_group.index_add_(0, group_index, (~correct).float())
        return (wrong_per_group == 0).float().mean()


def matthews_from_confusion(confusion: Tensor) -> Tensor:
    """Matthews correlation (Gorodkin's multiclass form) of a confusion matrix (rows: labels,
    columns: predictions), 0 where it is undefined: all labels or all predictions in one class.
    That is the official scorers' value (GLUE's and SuperGLUE's call scikit-learn's). torchmetrics
    instead fills the empty cells with a small epsilon, so a constant prediction scores about
    +-0.026 on CoLA, with the sign of the class it predicts."""
    confusion = confusion.double()
    labels, predicted, total = confusion.sum(1), confusion.sum(0), confusion.sum()
    covariance = confusion.trace() * total - labels @ predicted
    spread = (total**2 - predicted @ predicted) * (total**2 - labels @ labels)
    return (covariance / spread.sqrt() if spread > 0 else torch.zeros_like(covariance)).float()


def binary_matthews(predicted: Tensor, labels: Tensor) -> Tensor:
    """``matthews_from_confusion`` of 0/1 predictions against 0/1 labels."""
    confusion = torch.bincount(labels.long() * 2 + predicted.long(), minlength=4).view(2, 2)
    return matthews_from_confusion(confusion)


class MatthewsCorrCoef(MulticlassMatthewsCorrCoef):
    """torchmetrics' metric (its states, its reduction across processes) scored by ``matthews_from_confusion``."""

    def compute(self) -> Tensor:
        return matthews_from_confusion(self.confmat)


def _metric(name: str, num_labels: int) -> Metric:
    classes = max(num_labels, 2)
    factories = {
        "accuracy": lambda: MulticlassAccuracy(num_classes=classes, average="micro"),
        "f1_macro": lambda: MulticlassF1Score(num_classes=classes, average="macro"),
        "f1": BinaryF1Score,
        "f1a": BinaryF1Score,  # MultiRC: F1 over all answer options
        "matthews": lambda: MatthewsCorrCoef(num_classes=classes),
        "pearson": PearsonCorrCoef,
        "spearman": SpearmanCorrCoef,
        "exact_match": GroupExactMatch,
    }
    if name not in factories:
        raise ValueError(f"metric {name!r} is not one of {sorted(factories)}")
    return factories[name]()


def build_metrics(task: Task, prefix: str) -> MetricCollection:
    """``prefix`` + name -> metric, called as ``metrics(preds, target, groups=...)``."""
    return MetricCollection({name: _metric(name, task.num_labels) for name in task.metrics}, prefix=prefix)


def predictions(logits: Tensor, kind: str) -> Tensor:
    """Model outputs -> what the metrics compare with labels: scores or class indices."""
    return logits.squeeze(-1).float() if kind == "regression" else logits.argmax(-1)


def metric_mode(name: str) -> str:
    """``min`` for metrics where lower is better (perplexity, losses), else ``max``."""
    return "min" if name in ("perplexity", "loss") else "max"
