"""The free-text seq2seq tasks of the HyperMoE paper: SQuAD v1.1, ReCoRD, XSum and CNN/DailyMail.

A split is read from ``<data_dir>/<task>/<split>.jsonl`` (``<split>`` is ``train`` or
``validation``) when that file exists, else loaded from the Hugging Face hub with ``datasets``.
The local file holds one JSON object per line in the hub dataset's own column layout, so a hub
split saved with ``Dataset.to_json(path)`` (JSON lines by default) reads back as it is:

- squad: ``id``, ``title``, ``context``, ``question``, ``answers`` {``text``: [...], ``answer_start``: [...]}
- record: ``passage``, ``query``, ``entities`` [...], ``entity_spans``, ``answers`` [...], ``idx``
- xsum: ``document``, ``summary``, ``id``
- cnn_dailymail: ``article``, ``highlights``, ``id``

Only the columns the conversion reads (SQuAD: question, context, answers; ReCoRD: passage, query,
entities, answers; summarization: the document and summary columns) must be present.
"""

import logging
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hypermoe.data.readers import DataError, parse_json, read_lines
from hypermoe.data.sampling import seeded_subset
from hypermoe.data.sources import DataUnavailable
from hypermoe.data.tasks import TaskNaming
from hypermoe.data.text_pairs import TextPair

log = logging.getLogger(__name__)

Converter = Callable[[dict, str], list[TextPair]]


def pad_punctuation(text: str) -> str:
    """Spaces around every character that is not a letter, digit, mark, underscore or space, and
    whitespace collapsed: T5's ``_pad_punctuation`` for SQuAD, with the Unicode classes of the
    compacter/hyperformer port (so "François" stays one word). Ends are stripped, which the T5
    tokenizer does anyway."""
    padded = "".join(f" {char} " if _is_punctuation(char) else char for char in text)
    return " ".join(padded.split())


def _is_punctuation(char: str) -> bool:
    return not (char == "_" or char.isspace() or unicodedata.category(char)[0] in "LNM")


def _squad(row: dict, split: str) -> list[TextPair]:
    """T5 / compacter SQuAD: padded question and context; the first answer is the target, every
    answer (padded the same way, so the metric compares like with like) is accepted."""
    answers = tuple(pad_punctuation(text) for text in row["answers"]["text"])
    source = f"question: {pad_punctuation(row['question'])} context: {pad_punctuation(row['context'])}"
    return [TextPair(source=source, target=answers[0], answers=answers)]


def _record(row: dict, split: str) -> list[TextPair]:
    """T5 ReCoRD: the ``@highlight`` bullets of the passage become sentences. Training makes one pair
    per answer (each is a correct target); validation one pair per question, scored against all."""
    passage = re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", row["passage"])
    passage = re.sub(r"\n@highlight\n", ". ", passage)
    source = f"record query: {row['query']} entities: {', '.join(row['entities'])} passage: {passage}"
    answers = tuple(row["answers"])
    if not answers:
        raise KeyError("answers is empty")  # a row with nothing to learn or score is bad data, as in SQuAD
    targets = answers if split == "train" else answers[:1]
    return [TextPair(source=source, target=target, answers=answers) for target in targets]


def _summarize(document: str, summary: str) -> Converter:
    def convert(row: dict, split: str) -> list[TextPair]:
        return [TextPair(source=f"summarize: {row[document]}", target=row[summary], answers=(row[summary],))]

    return convert


@dataclass(frozen=True)
class GenerativeTask(TaskNaming):
    """Where a free-text task lives on the hub, how its rows become text pairs, and how it is scored."""

    name: str
    hub_id: str
    hub_config: str | None
    metrics: tuple[str, ...]  # the first one selects checkpoints
    convert: Converter = field(repr=False)  # (hub-layout row, split) -> text pairs
    max_target_length: int
    splits: tuple[tuple[str, str], ...] = (("train", "train"), ("validation", "validation"))  # ours -> hub's
    hub_revision: str | None = None  # a branch where the default one is unloadable

    benchmark = "generative"

    def signature(self) -> dict:
        """A free-text task's head is the language model itself: it scores any such task."""
        return {"kind": "text", "labels": [], "num_spans": 0}

    def hub_split(self, split: str) -> str:
        splits = dict(self.splits)
        if split not in splits:
            raise ValueError(f"{self.name} has no split {split!r}; it has {sorted(splits)}")
        return splits[split]


_QA_METRICS = ("exact_match", "f1")
_ROUGE = ("rouge1", "rouge2", "rougeL")

# Target lengths: the paper's 128 for summarization; it gives none for QA, where 128 is the
# compacter/hyperformer default. Source lengths (384, 1024) are the data configs' max_length.
GENERATIVE_TASKS: dict[str, GenerativeTask] = {
    task.name: task
    for task in (
        GenerativeTask("squad", "rajpurkar/squad", None, _QA_METRICS, _squad, 128),
        GenerativeTask("record", "aps/super_glue", "record", _QA_METRICS, _record, 128),
        # EdinburghNLP/xsum is still a loading script, which datasets>=4 refuses; the hub's own
        # parquet export of it loads.
        GenerativeTask("xsum", "EdinburghNLP/xsum", None, _ROUGE, _summarize("document", "summary"), 128,
                       hub_revision="refs/convert/parquet"),
        GenerativeTask("cnn_dailymail", "abisee/cnn_dailymail", "3.0.0", _ROUGE, _summarize("article", "highlights"),
                       128),
    )
}  # fmt: skip


def get_generative_task(name: str) -> GenerativeTask:
    if name not in GENERATIVE_TASKS:
        raise ValueError(f"unknown generative task {name!r}; known: {sorted(GENERATIVE_TASKS)}")
    return GENERATIVE_TASKS[name]


def row_to_pairs(task: GenerativeTask, row: dict, split: str) -> list[TextPair]:
    """The text pairs of one hub-layout row (ReCoRD training rows give one per answer)."""
    return task.convert(row, split)


def local_path(task: GenerativeTask, split: str, data_dir: Path) -> Path:
    return Path(data_dir) / task.name / f"{split}.jsonl"


def load_pairs(
    task_name: str, split: str, data_dir: Path, max_examples: int | None = None, seed: int = 0
) -> list[TextPair]:
    """The text pairs of ``split`` (train / validation). ``max_examples`` keeps that many rows drawn
    with ``seed`` (the same rows from the local file and from the hub, if the file is the hub split)."""
    task = get_generative_task(task_name)
    task.hub_split(split)  # an unknown split fails here, before any file or hub is tried
    path = local_path(task, split, data_dir)
    if path.exists():
        rows, source = _local_rows(path, max_examples, seed), str(path)
    else:
        rows, source = _hub_rows(task, split, path, max_examples, seed), f"the hub ({task.hub_id})"
    pairs = []
    for where, row in rows:
        try:
            pairs.extend(row_to_pairs(task, row, split))
        except (KeyError, IndexError, TypeError) as error:
            raise DataError(f"{where}: not a {task.name} row in the {task.hub_id} layout ({error!r})") from error
    log.info("%s %s: %d pairs from %s", task.name, split, len(pairs), source)
    return pairs


def _local_rows(path: Path, max_examples: int | None, seed: int) -> Iterator[tuple[str, dict]]:
    lines = read_lines(path)  # only the rows kept are parsed: summarization splits are hundreds of MB
    indices = seeded_subset(len(lines), max_examples, seed)
    for where, line in lines if indices is None else [lines[i] for i in indices]:
        yield where, parse_json(line, where)


def _hub_rows(
    task: GenerativeTask, split: str, path: Path, max_examples: int | None, seed: int
) -> Iterator[tuple[str, dict]]:
    hub_split = task.hub_split(split)
    load_args = f"{task.hub_id!r}, {task.hub_config!r}, split={hub_split!r}"
    if task.hub_revision is not None:
        load_args += f", revision={task.hub_revision!r}"
    try:
        import datasets

        rows = datasets.load_dataset(task.hub_id, task.hub_config, split=hub_split, revision=task.hub_revision)
    except Exception as error:  # offline, renamed on the hub, no `datasets` cache: all end here
        raise DataUnavailable(
            f"{task.name} {split}: no local file at {path}, and the Hugging Face hub "
            f"(datasets.load_dataset({load_args})) failed: {error}. Put the split at {path}, one JSON row per line "
            f"in the hub layout (where the hub is reachable: datasets.load_dataset({load_args})"
            f".to_json({str(path)!r})), set paths.data_dir or HYPERMOE_DATA to the folder that holds "
            f"{task.name}/, or run where the hub is reachable."
        ) from error
    indices = seeded_subset(len(rows), max_examples, seed)
    if indices is not None:
        rows = rows.select(indices)
    for position, row in zip(indices or range(len(rows)), rows, strict=True):
        yield f"{task.hub_id} {hub_split} row {position}", row
