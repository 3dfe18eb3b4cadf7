"""Every GLUE and SuperGLUE task: where its files are, how to read them, its head and metrics.

``kind`` picks the head: ``classification`` (one or two texts), ``regression`` (STS-B),
``multiple_choice`` (COPA) or ``span`` (WiC, WSC: pooled word spans). ``rows`` are the
official split sizes (MultiRC: answer options), checked whenever a split is read. Training and
validation use the train and validation splits; the test splits, whose labels are private, are
read (without labels) only to predict them for a benchmark submission (``eval.py split=test``).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypermoe.data import readers
from hypermoe.data.examples import Example
from hypermoe.data.readers import BOOL, unlabeled

NLI2 = ("entailment", "not_entailment")
SPLITS = ("train", "validation")  # the labelled splits; "test" has no labels
Reader = Callable[[Path], list[Example]]


class TaskNaming:
    """What every kind of task (classification, free text, corpus) is named and selected by."""

    benchmark: str
    name: str
    metrics: tuple[str, ...]

    @property
    def main_metric(self) -> str:
        """The metric that selects checkpoints: the first one."""
        return self.metrics[0]

    @property
    def qualified_name(self) -> str:
        """``<benchmark>/<task>``, as runs and checkpoints name it."""
        return f"{self.benchmark}/{self.name}"


@dataclass(frozen=True)
class Task(TaskNaming):
    name: str
    benchmark: str  # glue | superglue: files live in <data root>/<benchmark>/<folder>/
    folder: str
    files: dict[str, str]  # split -> file name
    readers: dict[str, Reader]  # split -> reader
    kind: str
    num_labels: int
    metrics: tuple[str, ...]  # the first one selects checkpoints
    rows: dict[str, int]
    hub_config: str  # config name of the benchmark's dataset on the Hugging Face hub
    labels: tuple = ()  # what label index i means; () for a score (STS-B)
    num_spans: int = 0  # word spans the span head pools (WiC, WSC: 2)
    hub_splits: tuple[tuple[str, str], ...] = ()  # our split -> the hub's, where they differ

    def hub_split(self, split: str) -> str:
        return dict(self.hub_splits).get(split, split)

    def signature(self) -> dict:
        """What a trained head depends on: a checkpoint can score another task only if equal."""
        return {"kind": self.kind, "labels": [str(label) for label in self.labels], "num_spans": self.num_spans}


def _readers(reader: Callable[..., list[Example]]) -> dict[str, Reader]:
    """The labelled splits read by ``reader``, the test split by its unlabeled form."""
    return {**dict.fromkeys(SPLITS, reader), "test": unlabeled(reader)}


def _superglue(name, folder, reader, kind, labels, metrics, rows, hub_config=None) -> Task:
    files = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
    return Task(name, "superglue", folder, files, _readers(reader), kind, len(labels), metrics, rows,
                hub_config or name, labels, num_spans=2 if kind == "span" else 0)  # fmt: skip


def _glue(name, folder, reader, labels, metrics, rows, kind="classification", dev="dev.tsv", test="test.tsv",
          hub_splits=()) -> Task:  # fmt: skip
    files = {"train": "train.tsv", "validation": dev, "test": test}
    return Task(name, "glue", folder, files, _readers(reader), kind, max(len(labels), 1), metrics, rows,
                name, labels, hub_splits=hub_splits)  # fmt: skip


_CB_LABELS = ("entailment", "contradiction", "neutral")
_MNLI_LABELS = ("entailment", "neutral", "contradiction")

# fmt: off
TASKS: dict[str, dict[str, Task]] = {
    "superglue": {
        task.name: task
        for task in (
            _superglue(
                "boolq",
                "BoolQ",
                readers.superglue_pair("passage", "question", BOOL),
                "classification",
                BOOL,
                ("accuracy",),
                {"train": 9427, "validation": 3270, "test": 3245},
            ),
            _superglue(
                "cb",
                "CB",
                readers.superglue_pair("premise", "hypothesis", _CB_LABELS),
                "classification",
                _CB_LABELS,
                ("f1_macro", "accuracy"),
                {"train": 250, "validation": 56, "test": 250},
            ),
            _superglue(
                "copa",
                "COPA",
                readers.read_copa,
                "multiple_choice",
                (0, 1),
                ("accuracy",),
                {"train": 400, "validation": 100, "test": 500},
            ),
            _superglue(
                "multirc",
                "MultiRC",
                readers.read_multirc,
                "classification",
                (0, 1),
                ("f1a", "exact_match"),
                {"train": 27243, "validation": 4848, "test": 9693},
            ),
            _superglue(
                "rte",
                "RTE",
                readers.superglue_pair("premise", "hypothesis", NLI2),
                "classification",
                NLI2,
                ("accuracy",),
                {"train": 2490, "validation": 277, "test": 3000},
            ),
            _superglue(
                "wic",
                "WiC",
                readers.read_wic,
                "span",
                BOOL,
                ("accuracy",),
                {"train": 5428, "validation": 638, "test": 1400},
            ),
            _superglue(
                "wsc",
                "WSC",
                readers.read_wsc,
                "span",
                BOOL,
                ("accuracy",),
                {"train": 554, "validation": 104, "test": 146},
                hub_config="wsc.fixed",
            ),
        )
    },
    "glue": {
        task.name: task
        for task in (
            _glue(
                "cola",
                "CoLA",
                readers.read_cola,
                ("0", "1"),
                ("matthews", "accuracy"),
                {"train": 8551, "validation": 1043, "test": 1063},
            ),
            _glue(
                "sst2",
                "SST-2",
                readers.glue_columns("sentence", None, "label", ("0", "1")),
                ("0", "1"),
                ("accuracy",),
                {"train": 67349, "validation": 872, "test": 1821},
            ),
            Task(
                "mrpc",
                "glue",
                "MRPC",
                {"train": "msr_paraphrase_train.txt", "validation": "msr_paraphrase_train.txt", "test": "test.tsv"},
                {
                    "train": readers.mrpc_split(validation=False),
                    "validation": readers.mrpc_split(validation=True),
                    "test": unlabeled(  # the GLUE script's test.tsv: index, #1 ID, #2 ID, #1 String, #2 String
                        readers.glue_columns("#1 String", "#2 String", None, ("0", "1"), ("sentence1", "sentence2"))
                    ),
                },
                "classification",
                2,
                ("f1", "accuracy"),
                {"train": 3668, "validation": 408, "test": 1725},
                "mrpc",
                ("0", "1"),
            ),
            _glue(
                "stsb",
                "STS-B",
                readers.glue_columns("sentence1", "sentence2", "score", readers.Score(0.0, 5.0)),
                (),
                ("pearson", "spearman"),
                {"train": 5749, "validation": 1500, "test": 1379},
                kind="regression",
            ),
            _glue(
                "qnli",
                "QNLI",
                readers.glue_columns("question", "sentence", "label", NLI2),
                NLI2,
                ("accuracy",),
                {"train": 104743, "validation": 5463, "test": 5463},
            ),
            _glue(
                "rte",
                "RTE",
                readers.glue_columns("sentence1", "sentence2", "label", NLI2),
                NLI2,
                ("accuracy",),
                {"train": 2490, "validation": 277, "test": 3000},
            ),
            _glue(
                "wnli",
                "WNLI",
                readers.glue_columns("sentence1", "sentence2", "label", ("0", "1")),
                ("0", "1"),
                ("accuracy",),
                {"train": 635, "validation": 71, "test": 146},
            ),
            _glue(
                "qqp",
                "QQP",
                readers.glue_columns("question1", "question2", "is_duplicate", ("0", "1"), test_id="id"),
                ("0", "1"),
                ("f1", "accuracy"),
                {"train": 363846, "validation": 40430, "test": 390965},
            ),
            _glue(
                "mnli",
                "MNLI",
                readers.glue_columns("sentence1", "sentence2", "gold_label", _MNLI_LABELS, ("premise", "hypothesis")),
                _MNLI_LABELS,
                ("accuracy",),
                {"train": 392702, "validation": 9815, "test": 9796},
                dev="dev_matched.tsv",
                test="test_matched.tsv",
                hub_splits=(("validation", "validation_matched"), ("test", "test_matched")),
            ),
        )
    },
}
# fmt: on


def get_task(benchmark: str, name: str) -> Task:
    if benchmark not in TASKS:
        raise ValueError(f"data.benchmark={benchmark!r} is not one of {sorted(TASKS)}")
    if name not in TASKS[benchmark]:
        raise ValueError(f"data.task={name!r} is not a {benchmark} task; choose one of {sorted(TASKS[benchmark])}")
    return TASKS[benchmark][name]
