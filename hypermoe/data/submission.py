"""Benchmark submission files: a task's test-split predictions in the format its leaderboard grades.

SuperGLUE (super.gluebenchmark.com): ``<Task>.jsonl`` named as the site names the task (BoolQ,
CB, COPA, MultiRC, RTE, WiC, WSC; AX-b, AX-g for the diagnostics), one JSON object per test row,
``{"idx": <row id>, "label": <label>}``, in the test file's order. Labels are spelled as the task's
own files spell them (CB and RTE: the label strings), but booleans as the strings ``"true"`` /
``"false"`` (BoolQ, WiC) or ``"True"`` / ``"False"`` (WSC) and COPA as the index 0 / 1 of the chosen
alternative. MultiRC has
one line per passage, its questions and their answer options nested as in its data:
``{"idx": p, "passage": {"questions": [{"idx": q, "answers": [{"idx": a, "label": 0|1}]}]}}``.
This follows jiant's SuperGLUE submission formatter (nyu-mll/jiant,
``jiant/scripts/benchmarks/benchmark_submission_formatter.py``, and each task's
``super_glue_format_preds``: ``str(label).lower()`` for BoolQ and WiC, ``str(label)`` for WSC, as
jiant v1's ``_write_winograd_preds`` spells it too, the choice index for COPA).

GLUE (gluebenchmark.com): ``<Task>.tsv`` (CoLA, SST-2, MRPC, STS-B, QNLI, QQP, RTE, WNLI;
``MNLI-m.tsv`` for MNLI matched), a header ``index<TAB>prediction`` and one row per test row with
its ``index``; labels as the GLUE files spell them (0 / 1 for CoLA, SST-2, MRPC, QQP, WNLI;
``entailment`` / ``not_entailment`` for QNLI and RTE), STS-B scores clipped to the scale [0, 5].
This follows jiant's ``jiant/scripts/postproc/glue_submission_formatter.py`` (file names, header)
and Hugging Face's ``examples/pytorch/text-classification/run_glue.py`` (``predict_results``:
``index<TAB>prediction``, label names, scores with 3 decimals).
"""

import json
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import pandas as pd

from hypermoe.data.examples import Example
from hypermoe.data.tasks import Task

STSB_SCALE = (0.0, 5.0)
_GLUE_NAMES = {"mnli": "MNLI-m"}  # the matched test set; the task folder's name otherwise
_CAPITALISED_BOOLEANS = {"superglue/wsc"}  # "True" / "False"; the other boolean tasks' are lower-case


def submission_name(task: Task) -> str:
    """The file name the benchmark expects for ``task``'s test predictions."""
    if task.benchmark == "superglue":
        return f"{task.folder}.jsonl"
    return f"{_GLUE_NAMES.get(task.name, task.folder)}.tsv"


def spelled(task: Task, prediction: float) -> Any:
    """A prediction (class index, or a score for regression) as the benchmark spells the label."""
    if task.kind == "regression":
        return min(max(float(prediction), STSB_SCALE[0]), STSB_SCALE[1])
    label = task.labels[int(prediction)]
    if isinstance(label, bool):
        return str(label) if task.qualified_name in _CAPITALISED_BOOLEANS else str(label).lower()
    return label


def submission_records(task: Task, examples: Sequence[Example], predictions: Sequence[float]) -> list[dict]:
    """One SuperGLUE record per test row (MultiRC: per passage), in the examples' order."""
    if len(examples) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} {task.qualified_name} test rows")
    rows = [(example.idx, spelled(task, prediction)) for example, prediction in zip(examples, predictions, strict=True)]
    if any(idx is None for idx, _ in rows):
        raise ValueError(f"{task.qualified_name}: a row without its idx (a labelled split?) cannot be submitted")
    if task.name != "multirc":
        return [{"idx": idx, "label": label} for idx, label in rows]
    return [
        {
            "idx": passage,
            "passage": {
                "questions": [
                    {"idx": question, "answers": [{"idx": idx[2], "label": label} for idx, label in answers]}
                    for question, answers in groupby(options, key=lambda row: row[0][1])
                ]
            },
        }
        for passage, options in groupby(rows, key=lambda row: row[0][0])
    ]


def write_submission(
    task: Task, examples: Sequence[Example], predictions: Sequence[float], folder: Path, name: str | None = None
) -> Path:
    """Writes ``task``'s submission file into ``folder``, named ``name`` where given (a diagnostic
    predicted as RTE); returns its path."""
    path = Path(folder) / (name or submission_name(task))
    path.parent.mkdir(parents=True, exist_ok=True)
    records = submission_records(task, examples, predictions)
    if task.benchmark == "superglue":
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    else:
        table = pd.DataFrame({"index": [r["idx"] for r in records], "prediction": [r["label"] for r in records]})
        table.to_csv(path, sep="\t", index=False, float_format="%.3f")
    return path
