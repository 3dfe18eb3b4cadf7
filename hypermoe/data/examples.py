"""The one shape every reader produces, whatever the benchmark's file format."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of segment ``segment`` (0 = text_a, 1 = text_b)."""

    segment: int
    start: int
    end: int


@dataclass(frozen=True)
class Example:
    """One model input. ``choices`` (multiple choice) replaces text_b with one text per choice;
    ``spans`` mark words the span head pools (WiC, WSC); ``group`` ties the answers of one
    question for exact match (MultiRC). ``label`` is None for unlabeled test splits, whose rows
    carry ``idx``, the benchmark's row id that submissions name (MultiRC: passage, question and
    answer ids); the labelled splits leave it None.
    ``fields`` keeps the record's raw texts under the hub's (and the text-to-text formats')
    names, in text_a, text_b / choices order (WiC's word last), because text_a and text_b may
    merge or rephrase them (MultiRC's question + answer, COPA's prompt); WSC's span texts are
    in ``spans``."""

    text_a: str
    text_b: str | None = None
    label: int | float | None = None
    choices: tuple[str, ...] = ()
    spans: tuple[Span, ...] = field(default=())
    group: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    idx: int | tuple[int, int, int] | None = None
