"""Readers of the official GLUE (tsv) and SuperGLUE (jsonl) files.

Every reader returns a list of ``Example``; a malformed line raises ``DataError`` naming the
file and line. GLUE tsv files contain unbalanced quotes, so they are read with quoting off;
some start with a UTF-8 byte-order mark.
"""

import csv
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hypermoe.data.examples import Example, Span

BOOL = (False, True)


class DataError(ValueError):
    """A data file that cannot be read as its task's format."""


def _label_index(value: Any, labels: Sequence[Any], where: str) -> int:
    if value not in labels:
        raise DataError(f"{where}: label {value!r} is not one of {list(labels)}")
    return list(labels).index(value)


def _optional_label(record: dict, labels: Sequence[Any], where: str) -> int | None:
    """The label's index in ``labels``; None where the split is unlabeled (test files)."""
    value = record.get("label")
    return None if value is None else _label_index(value, labels, where)


def iter_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """(``file:line``, record) for every non-empty line."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: not valid JSON ({error.msg})") from error


def iter_tsv(path: Path, header: bool) -> Iterator[tuple[str, dict | list]]:
    """(``file:line``, row) with quoting off; rows are dicts when the file has a header."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = next(rows) if header else None
        for number, row in enumerate(rows, start=2 if header else 1):
            where = f"{path}:{number}"
            if columns is None:
                yield where, row
            elif len(row) != len(columns):
                raise DataError(f"{where}: {len(row)} columns, the header has {len(columns)}")
            else:
                yield where, dict(zip(columns, row, strict=True))


def _field(record: dict, key: str, where: str) -> Any:
    try:
        return record[key]
    except KeyError:
        raise DataError(f"{where}: missing field {key!r} (has {sorted(record)})") from None


# SuperGLUE ------------------------------------------------------------------------------


def superglue_pair(text_a: str, text_b: str, labels: Sequence[Any]) -> Callable[[Path], list[Example]]:
    """Tasks with two texts and a label from ``labels`` (BoolQ, CB, RTE)."""

    def read(path: Path) -> list[Example]:
        examples = []
        for where, record in iter_jsonl(path):
            a, b = _field(record, text_a, where), _field(record, text_b, where)
            examples.append(
                Example(
                    text_a=a, text_b=b, label=_optional_label(record, labels, where), fields=((text_a, a), (text_b, b))
                )
            )
        return examples

    return read


def read_copa(path: Path) -> list[Example]:
    """Premise + "What was the cause/effect?" against two choices."""
    examples = []
    for where, record in iter_jsonl(path):
        question = _field(record, "question", where)
        if question not in ("cause", "effect"):
            raise DataError(f"{where}: question {question!r} is not 'cause' or 'effect'")
        premise = _field(record, "premise", where)
        choices = (_field(record, "choice1", where), _field(record, "choice2", where))
        examples.append(
            Example(
                text_a=copa_prompt(premise, question),
                choices=choices,
                label=_optional_label(record, (0, 1), where),
                fields=copa_fields(premise, question, choices),
            )
        )
    return examples


def read_multirc(path: Path) -> list[Example]:
    """One example per answer option: (passage, question + answer); grouped by question."""
    examples = []
    for where, record in iter_jsonl(path):
        passage = _field(record, "passage", where)
        paragraph = _field(passage, "text", where)
        for q, question in enumerate(_field(passage, "questions", where)):
            asked = _field(question, "question", where)
            for answer in _field(question, "answers", where):
                examples.append(
                    multirc_example(
                        paragraph,
                        asked,
                        _field(answer, "text", where),
                        _optional_label(answer, (0, 1), where),
                        f"{record.get('idx')}-{question.get('idx', q)}",
                    )
                )
    return examples


def read_wic(path: Path) -> list[Example]:
    """Two sentences; the target word's character span in each is pooled."""
    examples = []
    for where, record in iter_jsonl(path):
        spans = (
            Span(0, int(_field(record, "start1", where)), int(_field(record, "end1", where))),
            Span(1, int(_field(record, "start2", where)), int(_field(record, "end2", where))),
        )
        sentences = (_field(record, "sentence1", where), _field(record, "sentence2", where))
        examples.append(
            Example(
                text_a=sentences[0],
                text_b=sentences[1],
                label=_optional_label(record, BOOL, where),
                spans=spans,
                fields=(
                    ("sentence1", sentences[0]),
                    ("sentence2", sentences[1]),
                    ("word", _field(record, "word", where)),
                ),
            )
        )
    return examples


def word_span(text: str, word_index: int, span_text: str, where: str) -> Span:
    """Character span of ``span_text`` in ``text``, at the whole-word occurrence nearest to
    whitespace word ``word_index``. The index alone is not enough: some official indices are
    off by a few words (the hub's ``wsc.fixed`` corrects them) and words carry punctuation
    ("him.") that is not part of the span."""
    words = text.split(" ")
    if not 0 <= word_index < len(words):
        raise DataError(f"{where}: word index {word_index} is outside the text's {len(words)} words")
    near = sum(len(word) + 1 for word in words[:word_index])
    # whitespace inside the span text may differ from the text's (one official span has a newline)
    pattern = r"\s+".join(re.escape(word) for word in span_text.split())
    matches = list(re.finditer(rf"(?<!\w){pattern}(?!\w)", text, re.IGNORECASE))
    if not matches:
        raise DataError(f"{where}: span text {span_text!r} does not occur in the text")
    match = min(matches, key=lambda m: abs(m.start() - near))
    return Span(0, match.start(), match.end())


def read_wsc(path: Path) -> list[Example]:
    """Coreference of a noun phrase (span 1) and a pronoun (span 2) in one text."""
    examples = []
    for where, record in iter_jsonl(path):
        text, target = _field(record, "text", where), _field(record, "target", where)
        spans = tuple(
            word_span(text, int(_field(target, f"span{i}_index", where)), _field(target, f"span{i}_text", where), where)
            for i in (1, 2)
        )
        examples.append(
            Example(
                text_a=text,
                label=_optional_label(record, BOOL, where),
                spans=spans,
                fields=(("text", text),),
            )
        )
    return examples


def copa_prompt(premise: str, question: str) -> str:
    """COPA's premise as a question whose answers are the two choices."""
    return f"{premise} What was the {question}?"


def copa_fields(premise: str, question: str, choices: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """COPA's raw texts, which its prompt and choices no longer name (shared with the hub rows)."""
    return ("premise", premise), ("question", question), ("choice1", choices[0]), ("choice2", choices[1])


def multirc_example(paragraph: str, question: str, answer: str, label: int | None, group: str) -> Example:
    """One MultiRC answer option, built the same way from the local files and the hub rows."""
    return Example(
        text_a=paragraph,
        text_b=f"{question} {answer}",
        label=label,
        group=group,
        fields=(("paragraph", paragraph), ("question", question), ("answer", answer)),
    )


# GLUE -------------------------------------------------------------------------------------


def glue_columns(
    text_a: str,
    text_b: str | None,
    label: str,
    labels: Sequence[str] | None,
    field_names: tuple[str, str] | None = None,
) -> Callable[[Path], list[Example]]:
    """GLUE tsv with a header; ``labels`` None means a float score (STS-B).
    Test files have no label column: their examples get label None. ``field_names``: the
    hub's names of the two text columns (Example.fields), where the file names them otherwise."""

    names = field_names or (text_a, text_b)

    def read(path: Path) -> list[Example]:
        examples = []
        for where, row in iter_tsv(path, header=True):
            value = row.get(label)
            if value is None:
                parsed = None
            elif labels is None:
                parsed = _float(value, where)
            else:
                parsed = _label_index(value, labels, where)
            a = _field(row, text_a, where)
            b = None if text_b is None else _field(row, text_b, where)
            fields = ((names[0], a),) if b is None else ((names[0], a), (names[1], b))
            examples.append(Example(text_a=a, text_b=b, label=parsed, fields=fields))
        return examples

    return read


def _float(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{where}: score {value!r} is not a number") from None


def read_cola(path: Path) -> list[Example]:
    """CoLA train/dev: no header; columns source, label, original label, sentence."""
    examples = []
    for where, row in iter_tsv(path, header=False):
        if len(row) != 4:
            raise DataError(f"{where}: {len(row)} columns, CoLA has 4 (source, label, original label, sentence)")
        examples.append(
            Example(text_a=row[3], label=_label_index(row[1], ("0", "1"), where), fields=(("sentence", row[3]),))
        )
    return examples


def mrpc_split(validation: bool) -> Callable[[Path], list[Example]]:
    """GLUE MRPC from msr_paraphrase_train.txt, as the GLUE script builds it: validation = the
    pairs listed in dev_ids.tsv beside it, train = all the others."""

    def read(path: Path) -> list[Example]:
        return _read_mrpc(path, path.parent / "dev_ids.tsv", validation)

    return read


def _read_mrpc(path: Path, dev_ids: Path, validation: bool) -> list[Example]:
    listed = {tuple(row) for _, row in iter_tsv(dev_ids, header=False)}
    examples = []
    for where, row in iter_tsv(path, header=True):
        pair = (_field(row, "#1 ID", where), _field(row, "#2 ID", where))
        if (pair in listed) == validation:
            a, b = _field(row, "#1 String", where), _field(row, "#2 String", where)
            examples.append(
                Example(
                    text_a=a,
                    text_b=b,
                    label=_label_index(_field(row, "Quality", where), ("0", "1"), where),
                    fields=(("sentence1", a), ("sentence2", b)),
                )
            )
    return examples
