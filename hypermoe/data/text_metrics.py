"""Metrics of the free-text tasks, on generated strings, built from torchmetrics.

Every value is a fraction in [0, 1], like the classification metrics: SQuAD exact match and
token F1 (torchmetrics reports them x100, divided back here) and ROUGE F-measures. ROUGE runs
without stemming: torchmetrics' Porter stemmer needs ``nltk``, which is not a dependency, so the
scores are those of ``rouge_score`` with ``use_stemmer=False`` (slightly below stemmed ones).
"""

from collections.abc import Sequence

from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.text import ROUGEScore, SQuAD

ANSWER_METRICS = ("exact_match", "f1")
ROUGE_METRICS = ("rouge1", "rouge2", "rougeL")


def _check(preds: Sequence[str], answers: Sequence[Sequence[str]]) -> None:
    if len(preds) != len(answers):
        raise ValueError(f"{len(preds)} predictions for {len(answers)} answer sets")
    if any(len(options) == 0 for options in answers):
        raise ValueError("every prediction needs at least one reference answer")


class AnswerMatch(SQuAD):
    """SQuAD v1.1 exact match and token F1 after SQuAD normalisation (lower case, no punctuation,
    no articles), each against the best of a question's answers."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(names)

    def update(self, preds: Sequence[str], answers: Sequence[Sequence[str]]) -> None:
        _check(preds, answers)
        super().update(
            [{"prediction_text": pred, "id": str(i)} for i, pred in enumerate(preds)],
            [{"answers": {"text": list(options)}, "id": str(i)} for i, options in enumerate(answers)],
        )

    def compute(self) -> dict[str, Tensor]:
        return {key: value / 100 for key, value in super().compute().items() if key in self.names}


class Rouge(ROUGEScore):
    """ROUGE F-measures of each prediction against its best reference, averaged over predictions."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(rouge_keys=tuple(names))

    def update(self, preds: Sequence[str], answers: Sequence[Sequence[str]]) -> None:
        _check(preds, answers)
        super().update(list(preds), [list(options) for options in answers])

    def compute(self) -> dict[str, Tensor]:
        scores = super().compute()
        return {key: scores[f"{key}_fmeasure"] for key in self.rouge_keys}


def build_text_metrics(metric_names: Sequence[str], prefix: str) -> MetricCollection:
    """``prefix`` + name -> fraction, called as ``metrics.update(preds, answers)`` with one tuple of
    acceptable answers (references) per generated string."""
    unknown = sorted(set(metric_names) - set(ANSWER_METRICS) - set(ROUGE_METRICS))
    if unknown:
        raise ValueError(f"metrics {unknown} are not among {sorted(ANSWER_METRICS + ROUGE_METRICS)}")
    metrics = {}
    if answer_keys := [name for name in ANSWER_METRICS if name in metric_names]:
        metrics["answer_match"] = AnswerMatch(answer_keys)
    if rouge_keys := [name for name in ROUGE_METRICS if name in metric_names]:
        metrics["rouge"] = Rouge(rouge_keys)
    return MetricCollection(metrics, prefix=prefix)
