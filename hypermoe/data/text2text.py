"""GLUE and SuperGLUE examples as text-to-text pairs, in the format of the HyperMoE paper's code.

That code follows the compacter / hyperformer ``tasks.py`` (Rabeeh Karimi Mahabadi), itself after T5:
the source is the task prefix, then ``<field>: <value>`` for each of the task's fields, joined by
single spaces; the target is the dataset's integer label as a string ("0" = entailment for RTE), and
STS-B's score rounded to the nearest 0.2 ("3.8"). The prefix is the reference's task name: the GLUE
name ("rte", "mnli"), and "superglue-" + the hub config for SuperGLUE ("superglue-rte",
"superglue-wsc.fixed"). WSC marks its noun with ``* ... *`` and its pronoun with ``# ... #`` (T5's
``_mark_span``); MultiRC drops the paragraph's HTML markup. As in the reference, COPA's source leaves
out the question (cause / effect). One difference: MNLI's second field is "hypothesis:", where the
reference writes "hypothesis" without the colon.
"""

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from hypermoe.data.examples import Example
from hypermoe.data.tasks import Task
from hypermoe.data.text_pairs import TextPair

# The fields each source lists, in order (names as in Example.fields: the hub's columns).
SOURCE_FIELDS: dict[str, tuple[str, ...]] = {
    "superglue/boolq": ("question", "passage"),
    "superglue/cb": ("premise", "hypothesis"),
    "superglue/copa": ("premise", "choice1", "choice2"),
    "superglue/multirc": ("question", "answer", "paragraph"),
    "superglue/rte": ("premise", "hypothesis"),
    "superglue/wic": ("sentence1", "sentence2", "word"),
    "superglue/wsc": ("text",),
    "glue/cola": ("sentence",),
    "glue/sst2": ("sentence",),
    "glue/mrpc": ("sentence1", "sentence2"),
    "glue/stsb": ("sentence1", "sentence2"),
    "glue/qnli": ("question", "sentence"),
    "glue/rte": ("sentence1", "sentence2"),
    "glue/wnli": ("sentence1", "sentence2"),
    "glue/qqp": ("question1", "question2"),
    "glue/mnli": ("premise", "hypothesis"),
}


def prefix(task: Task) -> str:
    """The task name the reference puts first in every source."""
    return task.name if task.benchmark == "glue" else f"superglue-{task.hub_config}"


def to_text_pair(task: Task, example: Example) -> TextPair:
    """``example`` as the source and target the reference trains on; unlabeled examples get target ""."""
    names = SOURCE_FIELDS.get(task.qualified_name)
    if names is None:
        raise ValueError(f"no text-to-text format for {task.qualified_name}")
    values = dict(example.fields)
    missing = [name for name in names if name not in values]
    if missing:
        raise ValueError(f"{task.qualified_name} example lacks fields {missing} (has {sorted(values)})")
    if task.qualified_name == "superglue/wsc":
        values["text"] = mark_spans(values["text"], example)
    if task.qualified_name == "superglue/multirc":
        values = {name: remove_markup(value) for name, value in values.items()}
    source = " ".join([prefix(task)] + [f"{name}: {values[name]}" for name in names])
    return TextPair(source=source, target=_target(task, example.label), label=example.label, group=example.group)


def _target(task: Task, label: int | float | None) -> str:
    if label is None:
        return ""
    if task.kind == "regression":
        # nearest multiple of 0.2, printed with one decimal: STS-B as 26 classes, as T5 does
        return f"{round(label * 5) / 5:.1f}"
    return str(label)


def label_targets(task: Task) -> list[str]:
    """Every target a task's labels give: its class indices, or STS-B's 26 scores 0.0, 0.2, ..., 5.0."""
    if task.kind == "regression":
        return [_target(task, step / 5) for step in range(26)]
    return [_target(task, index) for index in range(task.num_labels)]


def most_frequent_target(pairs: Iterable[TextPair]) -> str:
    """The target text the most training pairs have: what a prediction whose output names no label
    is written as (``hypermoe.predict``)."""
    return Counter(pair.target for pair in pairs).most_common(1)[0][0]


def as_pair_of(task: Task, example: Example) -> Example:
    """A sentence pair read from another file (a diagnostic set) with its fields named as ``task``'s
    source names them (AX-b's sentence1 / sentence2 as SuperGLUE RTE's premise / hypothesis)."""
    names = SOURCE_FIELDS[task.qualified_name]
    return replace(example, fields=tuple(zip(names, (example.text_a, example.text_b), strict=True)))


def parse_label(task: Task, text: str) -> int | float | None:
    """The label index (STS-B: the score) a generated ``text`` names; None if it names none."""
    text = text.strip()
    if task.kind == "regression":
        try:
            score = float(text)
        except ValueError:
            return None
        return score if 0.0 <= score <= 5.0 else None  # STS-B's range; NaN fails both comparisons
    return int(text) if text in {str(index) for index in range(task.num_labels)} else None


def mark_spans(text: str, example: Example) -> str:
    """WSC's text with span 1 (the noun) as ``* noun *`` and span 2 (the pronoun) as ``# pronoun #``,
    placed by the example's character spans rather than T5's word-index regex, so a pronoun inside its
    noun phrase ("their" in "their mothers") is marked too: ``* # their # mothers *``."""
    if len(example.spans) != 2:
        raise ValueError(f"WSC needs 2 spans, the example has {len(example.spans)}")
    first, second = sorted(example.spans, key=lambda span: (span.start, -span.end))
    if second.start < first.end < second.end:
        raise ValueError(f"WSC spans cross: {example.spans}")
    # at one position: closing marks before opening ones, inner spans closed first and opened last
    cuts = sorted(
        [((span.start, 1, -span.end), f"{mark} ") for span, mark in zip(example.spans, "*#", strict=True)]
        + [((span.end, 0, -span.start), f" {mark}") for span, mark in zip(example.spans, "*#", strict=True)]
    )
    pieces, done = [], 0
    for (position, *_), mark in cuts:
        pieces += [text[done:position], mark]
        done = position
    return "".join(pieces) + text[done:]


def remove_markup(text: str) -> str:
    """MultiRC's paragraphs without HTML: line breaks become spaces, bold tags go."""
    return re.sub(r"</?b>", "", re.sub(r"<br\s*/?>", " ", text))
