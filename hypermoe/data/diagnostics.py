"""The SuperGLUE diagnostics, scored by a model trained on RTE (their format and labels).

AX-b (broad-coverage diagnostics, the GLUE diagnostic set in RTE's two classes) is scored with
Matthews correlation (R3), over all rows and per ``logic`` category (a row may name several,
``;``-separated; a row without one counts in the overall score only). AX-g (Winogender) is
scored with accuracy and gender parity: the share of its pairs whose two rows are predicted
alike. A pair is a premise with a male and a female pronoun and one hypothesis: two consecutive
rows with the same hypothesis, as jiant's ``GenderParity`` pairs them (in the official file every
row has its own ``pair_id``, the two of a pair 2 apart). Both files carry labels; their
submission files (``AX-b.jsonl``, ``AX-g.jsonl``) are written as RTE's.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_matthews_corrcoef

from hypermoe.data.examples import Example
from hypermoe.data.readers import DataError, read_diagnostic
from hypermoe.data.sources import DataUnavailable
from hypermoe.data.tasks import NLI2


def axb_scores(rows: list[tuple[Example, Any]], predicted: Tensor) -> dict[str, Any]:
    """Matthews correlation overall and per ``logic`` category."""
    labels = torch.tensor([example.label for example, _ in rows])
    categories = sorted({name for _, logic in rows if logic for name in logic.split(";")})
    by_logic = {}
    for category in categories:
        chosen = torch.tensor([bool(logic) and category in logic.split(";") for _, logic in rows])
        by_logic[category] = float(binary_matthews_corrcoef(predicted[chosen], labels[chosen]))
    return {"matthews": float(binary_matthews_corrcoef(predicted, labels)), "matthews_by_logic": by_logic}


def axg_scores(rows: list[tuple[Example, Any]], predicted: Tensor) -> dict[str, float]:
    """Accuracy, and gender parity over the pairs of consecutive rows."""
    labels = torch.tensor([example.label for example, _ in rows])
    return {
        "accuracy": float((predicted == labels).float().mean()),
        "gender_parity": float((predicted[0::2] == predicted[1::2]).float().mean()),
    }


def _check_pairs(path: Path, rows: list[tuple[Example, Any]]) -> None:
    if len(rows) % 2:
        raise DataError(f"{path}: {len(rows)} rows, not pairs of rows")
    for first in range(0, len(rows), 2):
        if rows[first][0].text_b != rows[first + 1][0].text_b:
            raise DataError(f"{path}:{first + 1}-{first + 2}: not a Winogender pair (their hypotheses differ)")


@dataclass(frozen=True)
class Diagnostic:
    name: str  # the SuperGLUE name: folder, file and submission file
    text_a: str
    text_b: str
    tag: str | None  # the field kept beside each row for scoring
    rows: int  # the official size
    score: Callable[[list[tuple[Example, Any]], Tensor], dict[str, Any]]
    paired: bool = False  # rows 2i and 2i + 1 form a pair
    benchmark: str = "superglue"  # the leaderboard whose submission holds it
    predicted_by: tuple[str, ...] = ("superglue/rte",)  # the tasks whose models predict it, preferred first

    @property
    def submission(self) -> str:
        return f"{self.name}.jsonl"

    def read(self, data_dir: Path) -> list[tuple[Example, Any]]:
        """Every row, with its ``tag``; the row count checked as a split's is."""
        path = Path(data_dir) / "superglue" / self.name / f"{self.name}.jsonl"
        if not path.exists():
            raise DataUnavailable(
                f"superglue/{self.name}: no local file at {path}. Put the official {self.name}.jsonl there "
                "(set paths.data_dir or HYPERMOE_DATA to the folder that holds glue/ and superglue/)."
            )
        rows = read_diagnostic(path, self.text_a, self.text_b, NLI2, self.tag)
        if len(rows) != self.rows:
            raise DataError(f"{path}: read {len(rows)} rows for {self.name}, expected {self.rows}")
        if self.paired:
            _check_pairs(path, rows)
        return rows


DIAGNOSTICS = {
    "ax_b": Diagnostic("AX-b", "sentence1", "sentence2", "logic", 1104, axb_scores),
    "ax_g": Diagnostic("AX-g", "premise", "hypothesis", None, 356, axg_scores, paired=True),
}
