"""The one shape every text-to-text task produces: a source text and a target text."""

from dataclasses import dataclass


@dataclass(frozen=True)
class TextPair:
    """One seq2seq example. ``target`` is what the model is trained to generate; ``answers``
    are every acceptable answer, where a task has several (SQuAD, ReCoRD: scored by the best
    match); ``label`` is the class index or score a generated target maps back to for the
    classification metrics (None for free-text tasks); ``group`` ties the answers of one
    question for exact match (MultiRC)."""

    source: str
    target: str
    answers: tuple[str, ...] = ()
    label: int | float | None = None
    group: str | None = None
