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
    question for exact match (MultiRC). ``label`` is None for unlabeled test splits."""

    text_a: str
    text_b: str | None = None
    label: int | float | None = None
    choices: tuple[str, ...] = ()
    spans: tuple[Span, ...] = field(default=())
    group: str | None = None
