"""Where a split comes from: the local data root first, then the Hugging Face hub.

The data root is laid out as the official releases unpack (``<root>/superglue/RTE/val.jsonl``,
``<root>/glue/CoLA/dev.tsv``). When a file is missing, the split is loaded from the hub with
``datasets`` (``aps/super_glue``, ``nyu-mll/glue``); when that fails too, the error says where
the files were looked for and how to provide them.
"""

import dataclasses
import logging
from collections import Counter
from pathlib import Path

from hypermoe.data.examples import Example, Span
from hypermoe.data.readers import DataError, copa_fields, copa_prompt, multirc_example, word_span
from hypermoe.data.tasks import Task

log = logging.getLogger(__name__)

HUB_DATASETS = {"superglue": "aps/super_glue", "glue": "nyu-mll/glue"}


class DataUnavailable(FileNotFoundError):
    """Neither a local file nor the hub could provide what a run reads: a split, pretrained weights, a tokenizer."""


def local_path(task: Task, split: str, data_dir: Path) -> Path:
    return Path(data_dir) / task.benchmark / task.folder / task.files[split]


def load_split(task: Task, split: str, data_dir: Path) -> list[Example]:
    """Every example of ``split`` (train / validation / test), with its row count checked."""
    path = local_path(task, split, data_dir)
    if path.exists():
        examples, source = task.readers[split](path), str(path)
    else:
        try:
            examples, source = _from_hub(task, split), f"{HUB_DATASETS[task.benchmark]}/{task.hub_config}"
        except Exception as error:  # offline, unknown config, no `datasets` cache: all end here
            raise DataUnavailable(
                f"{task.benchmark}/{task.name} {split}: no local file at {path}, and the Hugging Face hub "
                f"({HUB_DATASETS[task.benchmark]}, config {task.hub_config!r}) failed: {error}. "
                f"Put the official files under {Path(data_dir) / task.benchmark / task.folder}/ "
                "(set paths.data_dir or HYPERMOE_DATA to the folder that holds glue/ and superglue/), "
                "or run where the hub is reachable."
            ) from error
    expected = task.rows.get(split)
    if expected is not None and len(examples) != expected:
        raise DataError(f"{source}: read {len(examples)} rows for {task.name} {split}, expected {expected}")
    repeated = [(idx, n) for idx, n in Counter(e.idx for e in examples if e.idx is not None).items() if n > 1]
    if repeated:  # a submission names each row once, by its id
        idx, n = repeated[0]
        raise DataError(f"{source}: row id {idx!r} appears {n} times in {task.name} {split}; each row's id is unique")
    log.info("%s %s: %d rows from %s", task.name, split, len(examples), source)
    return examples


def _from_hub(task: Task, split: str) -> list[Example]:
    import datasets

    rows = datasets.load_dataset(HUB_DATASETS[task.benchmark], task.hub_config, split=task.hub_split(split))
    return [hub_example(task, row) for row in rows]


def hub_example(task: Task, row: dict) -> Example:
    """One hub row as the local reader of the same task would have read it (hub labels are
    already indices in the order the local readers use; -1 means unlabeled). ``fields`` keep
    the hub's column names, which the local readers use too. An unlabeled (test) row keeps its
    ``idx`` (MultiRC's as a (paragraph, question, answer) tuple) for a submission."""
    example = _hub_example(task, row)
    if example.label is None:
        idx = row["idx"]
        idx = tuple(idx[key] for key in ("paragraph", "question", "answer")) if isinstance(idx, dict) else idx
        example = dataclasses.replace(example, idx=idx)
    return example


def _hub_example(task: Task, row: dict) -> Example:
    label = row.get("label")
    label = None if label is None or label == -1 else label
    name = task.qualified_name
    pairs = {
        "superglue/boolq": ("passage", "question"),
        "superglue/cb": ("premise", "hypothesis"),
        "superglue/rte": ("premise", "hypothesis"),
        "glue/mrpc": ("sentence1", "sentence2"),
        "glue/stsb": ("sentence1", "sentence2"),
        "glue/qnli": ("question", "sentence"),
        "glue/rte": ("sentence1", "sentence2"),
        "glue/wnli": ("sentence1", "sentence2"),
        "glue/qqp": ("question1", "question2"),
        "glue/mnli": ("premise", "hypothesis"),
    }
    if name in pairs:
        a, b = pairs[name]
        return Example(text_a=row[a], text_b=row[b], label=label, fields=((a, row[a]), (b, row[b])))
    if name in ("glue/cola", "glue/sst2"):
        return Example(text_a=row["sentence"], label=label, fields=(("sentence", row["sentence"]),))
    if name == "superglue/copa":
        choices = (row["choice1"], row["choice2"])
        return Example(
            text_a=copa_prompt(row["premise"], row["question"]),
            choices=choices,
            label=label,
            fields=copa_fields(row["premise"], row["question"], choices),
        )
    if name == "superglue/multirc":
        group = f"{row['idx']['paragraph']}-{row['idx']['question']}"
        return multirc_example(row["paragraph"], row["question"], row["answer"], label, group)
    if name == "superglue/wic":
        spans = (Span(0, row["start1"], row["end1"]), Span(1, row["start2"], row["end2"]))
        fields = tuple((key, row[key]) for key in ("sentence1", "sentence2", "word"))
        return Example(text_a=row["sentence1"], text_b=row["sentence2"], label=label, spans=spans, fields=fields)
    if name == "superglue/wsc":
        text = row["text"]
        spans = tuple(
            word_span(text, row[f"span{i}_index"], row[f"span{i}_text"], "hub row", partial=label is None)
            for i in (1, 2)
        )
        return Example(text_a=text, label=label, spans=spans, fields=(("text", text),))
    raise DataError(f"no hub conversion for {name}")
