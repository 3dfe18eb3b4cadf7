"""The diagnostic sets: predicted by an NLI model, written for the leaderboard and, where their
labels are at hand, scored.

SuperGLUE's AX-b (broad-coverage diagnostics: the GLUE diagnostic set in RTE's two classes) and
AX-g (Winogender) are predicted by a model trained on RTE. AX-b is scored with Matthews
correlation (R3), over all rows and per ``logic`` category (a row may name several,
``;``-separated; a row without one counts in the overall score only). AX-g is scored with
accuracy and gender parity: the share of its pairs whose two rows are predicted alike. A pair is a
premise with a male and a female pronoun and one hypothesis: two consecutive rows with the same
hypothesis, as jiant's ``GenderParity`` pairs them (in the official file every row has its own
``pair_id``, the two of a pair 2 apart). Both files carry labels; their submission files
(``AX-b.jsonl``, ``AX-g.jsonl``) are written as RTE's.

GLUE's diagnostic (``glue/diagnostic/diagnostic.tsv``, written as ``AX.tsv``) is predicted in
MNLI's three classes by a model trained on GLUE MNLI, or on RTE where there is no MNLI model: its
``not_entailment`` is written as ``neutral``, the class that claims only that the hypothesis does
not follow (``contradiction`` claims more). The GLUE file has no labels; its 1,104 sentence pairs
are AX-b's, in the same order, whose labels are GLUE's with neutral and contradiction merged. So
where AX-b's file is in the data root (and its pairs are the GLUE file's, checked row by row), AX
is scored in those two classes: Matthews correlation over all rows and per coarse category (the
rows that name a fine-grained category of ``lexical-semantics``, ``predicate-argument-structure``,
``logic`` or ``knowledge``). This is not the leaderboard's three-class R3, which needs GLUE's
unreleased three-class labels.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hypermoe.data.examples import Example
from hypermoe.data.metrics import binary_matthews
from hypermoe.data.readers import DataError, glue_columns, read_diagnostic
from hypermoe.data.sources import DataUnavailable
from hypermoe.data.tasks import NLI2, Task, get_task

Rows = list[tuple[Example, Any]]  # each example with the record its scores read (None: nothing to score)
COARSE_CATEGORIES = ("lexical-semantics", "predicate-argument-structure", "logic", "knowledge")


def matthews_by(rows: Rows, predicted: Tensor, key: str) -> dict[str, float]:
    """Matthews correlation over the rows whose record names a category under ``key``, per category."""
    labels = torch.tensor([example.label for example, _ in rows])
    named = [record.get(key) or "" for _, record in rows]
    scores = {}
    for category in sorted({name for names in named for name in names.split(";") if name}):
        chosen = torch.tensor([category in names.split(";") for names in named])
        scores[category] = float(binary_matthews(predicted[chosen], labels[chosen]))
    return scores


def matthews(rows: Rows, predicted: Tensor) -> float:
    return float(binary_matthews(predicted, torch.tensor([example.label for example, _ in rows])))


def axb_scores(rows: Rows, predicted: Tensor) -> dict[str, Any]:
    """Matthews correlation overall and per ``logic`` category."""
    return {"matthews": matthews(rows, predicted), "matthews_by_logic": matthews_by(rows, predicted, "logic")}


def axg_scores(rows: Rows, predicted: Tensor) -> dict[str, float]:
    """Accuracy, and gender parity over the pairs of consecutive rows."""
    labels = torch.tensor([example.label for example, _ in rows])
    return {
        "accuracy": float((predicted == labels).float().mean()),
        "gender_parity": float((predicted[0::2] == predicted[1::2]).float().mean()),
    }


def ax_scores(rows: Rows, predicted: Tensor) -> dict[str, Any]:
    """``predicted`` in MNLI's classes, scored in AX-b's two (neutral and contradiction merged):
    Matthews correlation overall and per coarse category; nothing without AX-b's labels."""
    if any(example.label is None for example, _ in rows):
        return {}
    entailment = get_task("glue", "mnli").labels.index("entailment")
    merged = (predicted != entailment).long()  # NLI2: 0 entailment, 1 not_entailment
    by_category = {
        name: matthews([rows[i] for i in chosen], merged[chosen])
        for name in COARSE_CATEGORIES
        if (chosen := [i for i, (_, record) in enumerate(rows) if record.get(name)])
    }
    return {
        "scored_against": "AX-b's two-class labels",
        "matthews": matthews(rows, merged),
        "matthews_by_category": by_category,
    }


def _check_pairs(path: Path, rows: Rows) -> None:
    if len(rows) % 2:
        raise DataError(f"{path}: {len(rows)} rows, not pairs of rows")
    for first in range(0, len(rows), 2):
        if rows[first][0].text_b != rows[first + 1][0].text_b:
            raise DataError(f"{path}:{first + 1}-{first + 2}: not a Winogender pair (their hypotheses differ)")


def _local_file(data_dir: Path, relative: str, name: str) -> Path:
    path = Path(data_dir) / relative
    if not path.exists():
        raise DataUnavailable(
            f"{relative.rsplit('/', 1)[0]}: no local file at {path}. Put the official {name} there "
            "(set paths.data_dir or HYPERMOE_DATA to the folder that holds glue/ and superglue/)."
        )
    return path


def _check_rows(path: Path, rows: list, name: str, expected: int) -> None:
    if len(rows) != expected:
        raise DataError(f"{path}: read {len(rows)} rows for {name}, expected {expected}")


@dataclass(frozen=True)
class Diagnostic:
    """One diagnostic set. Its submission spells ``task``'s labels; a model's label is first renamed
    by ``renamed`` (RTE's not_entailment as GLUE's neutral)."""

    name: str  # the leaderboard's name: of the submission file, and of the folder a SuperGLUE one lives in
    benchmark: str  # the leaderboard whose submission holds it
    task: str  # the task whose labels the submission file spells
    predicted_by: tuple[str, ...]  # the tasks whose models predict it, preferred first
    rows: int  # the official size
    score: Callable[[Rows, Tensor], dict[str, Any]]
    renamed: dict[str, str] = field(default_factory=dict)
    text: tuple[str, str] = ("sentence1", "sentence2")  # its two text fields
    paired: bool = False  # rows 2i and 2i + 1 form a pair

    @property
    def submission(self) -> str:
        return f"{self.name}.jsonl" if self.benchmark == "superglue" else f"{self.name}.tsv"

    def accepts(self, model_task: Task) -> bool:
        return any(model_task.signature() == get_task(*name.split("/")).signature() for name in self.predicted_by)

    def relabel(self, model_task: Task, predicted: Tensor) -> Tensor:
        """The model's class indices as indices into the submission task's labels."""
        labels = get_task(*self.task.split("/")).labels
        return torch.tensor([labels.index(self.renamed.get(label, label)) for label in model_task.labels])[predicted]

    def read(self, data_dir: Path) -> Rows:
        """Every row, with what its scores read; the row count checked as a split's is."""
        if self.benchmark == "glue":
            return _read_glue_diagnostic(data_dir, self)
        path = _local_file(data_dir, f"superglue/{self.name}/{self.name}.jsonl", f"{self.name}.jsonl")
        rows = read_diagnostic(path, *self.text, NLI2)
        _check_rows(path, rows, self.name, self.rows)
        if self.paired:
            _check_pairs(path, rows)
        return rows


def _read_glue_diagnostic(data_dir: Path, diagnostic: Diagnostic) -> Rows:
    """The GLUE file's rows, each with AX-b's label and record where AX-b's file is present."""
    path = _local_file(data_dir, "glue/diagnostic/diagnostic.tsv", "diagnostic.tsv")
    examples = glue_columns(*diagnostic.text, None, NLI2)(path, labeled=False)
    _check_rows(path, examples, diagnostic.name, diagnostic.rows)
    if not (Path(data_dir) / "superglue" / "AX-b" / "AX-b.jsonl").exists():
        return [(example, None) for example in examples]
    labelled = DIAGNOSTICS["ax_b"].read(data_dir)
    for row, (example, (axb, _)) in enumerate(zip(examples, labelled, strict=True), start=2):
        if (example.text_a, example.text_b) != (axb.text_a, axb.text_b):
            raise DataError(f"{path}:{row}: its sentence pair is not AX-b's row {axb.idx}: AX cannot be scored")
    return [
        (replace(example, label=axb.label), record) for example, (axb, record) in zip(examples, labelled, strict=True)
    ]


DIAGNOSTICS = {
    "ax_b": Diagnostic("AX-b", "superglue", "superglue/rte", ("superglue/rte",), 1104, axb_scores),
    "ax_g": Diagnostic(
        "AX-g", "superglue", "superglue/rte", ("superglue/rte",), 356, axg_scores,
        text=("premise", "hypothesis"), paired=True,
    ),
    "ax": Diagnostic(
        "AX", "glue", "glue/mnli", ("glue/mnli", "glue/rte"), 1104, ax_scores, renamed={"not_entailment": "neutral"}
    ),
}  # fmt: skip
