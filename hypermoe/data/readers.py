"""Readers of the official GLUE (tsv) and SuperGLUE (jsonl) files.

Every reader returns a list of ``Example``; bad data raises ``DataError`` naming the file and
line: bytes that are not UTF-8, an empty file, a line that is not a JSON object or has the wrong
number of tab-separated columns, a missing field, a text that is not a string, a label outside the
task's set, a score outside the task's range, a span outside its sentence, a path that is not a
regular file. Every reader reads a labelled split (train, validation: every row must have a label)
or, with ``labeled=False``, a test split, whose labels are private: its rows have none, and each
must carry the benchmark's row id (``idx``; GLUE's ``index`` column), which a submission names. An
empty string and any Unicode are data. GLUE tsv files contain unbalanced quotes, so they are split
at tabs with no quoting; some start with a UTF-8 byte-order mark.
"""

import codecs
import functools
import json
import re
import stat
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypermoe.data.examples import Example, Span

BOOL = (False, True)
_JSON_TYPES = {str: "a string", int: "an integer", list: "an array", dict: "an object"}


class DataError(ValueError):
    """A data file that cannot be read as its task's format."""


@dataclass(frozen=True)
class Score:
    """The official range of a regression task's score (STS-B: 0 to 5)."""

    low: float
    high: float


def read_utf8(path: Path) -> str:
    """The text of ``path``; bytes that are not UTF-8 are reported at their line. A leading
    byte-order mark marks the encoding and is not text (MRPC's files start with one)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():  # reading a folder fails, and reading a pipe or a device may never end
        raise DataError(f"{path}: not a regular file ({_file_kind(path)})")
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({error.reason}: byte {data[error.start]:#04x})") from None


def _file_kind(path: Path) -> str:
    mode = path.stat().st_mode
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket"}
    return next((kind for test, kind in kinds.items() if test(mode)), "a device")


def read_lines(path: Path) -> list[tuple[str, str]]:
    """(``file:line``, line without its line end) for every row of a one-row-per-line file.

    Lines end at "\\n" only: U+2028, U+0085 and the like inside a text are data, which
    ``str.splitlines`` would cut. An empty line holds no row (a trailing newline, a gap between
    rows) and is passed over; where a row is missing, the split's row count says so. A line of
    spaces or tabs is not empty: it is a row, for the format to accept or reject."""
    lines = enumerate(read_utf8(path).split("\n"), start=1)
    rows = [(f"{path}:{number}", row) for number, line in lines if (row := line.removesuffix("\r"))]
    if not rows:
        raise DataError(f"{path}: the file is empty (no rows)")
    return rows


def iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """(``file:line``, record) for every line; each must be one JSON value (readers check it is
    an object with their fields)."""
    for where, line in read_lines(path):
        yield where, parse_json(line, where)


def parse_json(line: str, where: str) -> Any:
    """The JSON value on one line; the error names the line (and a tsv line given for JSON lines)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        hint = ": tab-separated, not JSON lines?" if "\t" in line and not line.startswith("{") else ""
        raise DataError(f"{where}: not valid JSON ({error.msg}: column {error.colno}){hint}") from None


def iter_tsv(path: Path, columns: Sequence[str], header: bool) -> Iterator[tuple[str, dict[str, str]]]:
    """(``file:line``, {column: value}) for every row, split at tabs and nothing else. With a
    header, ``columns`` are those it must name (it may name more); without one, they name the
    file's columns in order. Every row has as many columns as the header (or ``columns``)."""
    lines = iter(read_lines(path))
    names = list(columns)
    if header:
        where, line = next(lines)
        names = line.split("\t")
        missing = [column for column in columns if column not in names]
        if missing:
            raise DataError(
                f"{where}: the header lacks column(s) {missing}; it has {len(names)} tab-separated column(s): "
                f"{names!r:.200}"
            )
    rows = 0
    for where, line in lines:
        values = line.split("\t")
        if len(values) != len(names):
            raise DataError(f"{where}: {len(values)} tab-separated column(s), expected {len(names)}: {names}")
        rows += 1
        yield where, dict(zip(names, values, strict=True))
    if not rows:  # only a header: read_lines refuses a file with no line at all
        raise DataError(f"{path}: the file is empty (a header and no rows)")


def _field(record: Any, key: str, where: str, kind: type = object) -> Any:
    """``record[key]``, which must be of type ``kind``."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with field {key!r}, found {record!r:.80}")
    if key not in record:
        raise DataError(f"{where}: missing field {key!r} (has {sorted(record)})")
    value = record[key]
    if not isinstance(value, kind):
        raise DataError(f"{where}: field {key!r} is {value!r:.80}, not {_JSON_TYPES[kind]}")
    return value


def _label(record: dict, labels: Sequence[Any], where: str) -> int:
    """The index of the record's label in ``labels``."""
    return _label_index(_field(record, "label", where), labels, where)


def _label_index(value: Any, labels: Sequence[Any], where: str) -> int:
    if value not in labels:
        raise DataError(f"{where}: label {value!r} is not one of {list(labels)}")
    return list(labels).index(value)


def row_id(value: Any, where: str, name: str = "idx") -> int:
    """A row id: an integer >= 0 (AX-b's JSON and GLUE's tsv files spell it as a string of digits)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"{where}: {name} {value!r:.80} is not a row id (an integer >= 0)")
    return value


def _target(record: dict, labels: Sequence[Any], where: str, labeled: bool) -> dict[str, int]:
    """A labelled row's label index, or a test row's id: the Example's ``label`` or its ``idx``."""
    if labeled:
        return {"label": _label(record, labels, where)}
    return {"idx": row_id(_field(record, "idx", where), where)}


def unlabeled(reader: Callable[..., list[Example]]) -> Callable[[Path], list[Example]]:
    """``reader`` for its task's test file: rows with an id and no label."""
    return functools.partial(reader, labeled=False)


# SuperGLUE ------------------------------------------------------------------------------


def superglue_pair(text_a: str, text_b: str, labels: Sequence[Any]) -> Callable[..., list[Example]]:
    """Tasks with two texts and a label from ``labels`` (BoolQ, CB, RTE)."""

    def read(path: Path, labeled: bool = True) -> list[Example]:
        examples = []
        for where, record in iter_jsonl(path):
            a, b = _field(record, text_a, where, str), _field(record, text_b, where, str)
            target = _target(record, labels, where, labeled)
            examples.append(Example(text_a=a, text_b=b, fields=((text_a, a), (text_b, b)), **target))
        return examples

    return read


def read_copa(path: Path, labeled: bool = True) -> list[Example]:
    """Premise + "What was the cause/effect?" against two choices."""
    examples = []
    for where, record in iter_jsonl(path):
        question = _field(record, "question", where)
        if question not in ("cause", "effect"):
            raise DataError(f"{where}: question {question!r} is not 'cause' or 'effect'")
        premise = _field(record, "premise", where, str)
        choices = (_field(record, "choice1", where, str), _field(record, "choice2", where, str))
        examples.append(
            Example(
                text_a=copa_prompt(premise, question),
                choices=choices,
                fields=copa_fields(premise, question, choices),
                **_target(record, (0, 1), where, labeled),
            )
        )
    return examples


def read_multirc(path: Path, labeled: bool = True) -> list[Example]:
    """One example per answer option: (passage, question + answer); grouped by question. A test
    row's id is (passage idx, question idx, answer idx), as MultiRC's submission nests them."""
    examples = []
    for where, record in iter_jsonl(path):
        passage = _field(record, "passage", where, dict)
        paragraph = _field(passage, "text", where, str)
        for q, question in enumerate(_field(passage, "questions", where, list)):
            asked = _field(question, "question", where, str)
            for answer in _field(question, "answers", where, list):
                label, idx = None, None
                if labeled:
                    label = _label(answer, (0, 1), where)
                else:
                    idx = tuple(row_id(_field(level, "idx", where), where) for level in (record, question, answer))
                group = f"{record.get('idx')}-{question.get('idx', q)}"
                examples.append(
                    multirc_example(paragraph, asked, _field(answer, "text", where, str), label, group, idx)
                )
    return examples


def read_wic(path: Path, labeled: bool = True) -> list[Example]:
    """Two sentences; the target word's character span in each is pooled."""
    examples = []
    for where, record in iter_jsonl(path):
        sentences = (_field(record, "sentence1", where, str), _field(record, "sentence2", where, str))
        spans = tuple(_char_span(record, segment, sentences[segment], where) for segment in (0, 1))
        examples.append(
            Example(
                text_a=sentences[0],
                text_b=sentences[1],
                spans=spans,
                fields=(
                    ("sentence1", sentences[0]),
                    ("sentence2", sentences[1]),
                    ("word", _field(record, "word", where, str)),
                ),
                **_target(record, BOOL, where, labeled),
            )
        )
    return examples


def _char_span(record: dict, segment: int, sentence: str, where: str) -> Span:
    """WiC's span ``start<n>:end<n>`` of sentence n, which must be a non-empty part of it."""
    n = segment + 1
    start, end = _field(record, f"start{n}", where, int), _field(record, f"end{n}", where, int)
    if not 0 <= start < end <= len(sentence):
        raise DataError(
            f"{where}: span start{n}={start}, end{n}={end} is not inside sentence{n} "
            f"({len(sentence)} characters): it must satisfy 0 <= start{n} < end{n} <= {len(sentence)}"
        )
    return Span(segment, start, end)


def word_span(text: str, word_index: int, span_text: str, where: str, partial: bool = False) -> Span:
    """Character span of ``span_text`` in ``text``, at the whole-word occurrence nearest to
    whitespace word ``word_index``. The index alone is not enough: some official indices are
    off by a few words (the hub's ``wsc.fixed`` corrects them) and words carry punctuation
    ("him.") that is not part of the span. With ``partial`` (a test split, none of whose rows
    may be dropped: six official WSC test spans are not in their text as written, such as
    "The traffic light." or "Kamenev and Zinoviev"), a span text that does not occur stands for
    its longest run of words (without end punctuation) that does."""
    words = text.split(" ")
    if not 0 <= word_index < len(words):
        raise DataError(f"{where}: word index {word_index} is outside the text's {len(words)} words")
    near = sum(len(word) + 1 for word in words[:word_index])
    match = _nearest(text, span_text.split(), near)
    if match is None and partial:
        match = _nearest_longest_run(text, span_text, near)
    if match is None:
        raise DataError(f"{where}: span text {span_text!r} does not occur in the text")
    return Span(0, match.start(), match.end())


def _nearest(text: str, words: Sequence[str], near: int) -> re.Match | None:
    """The whole-word occurrence of ``words`` in ``text`` nearest to character ``near``, any case."""
    # whitespace inside the span text may differ from the text's (one official span has a newline)
    pattern = r"\s+".join(re.escape(word) for word in words)
    matches = list(re.finditer(rf"(?<!\w){pattern}(?!\w)", text, re.IGNORECASE))
    return min(matches, key=lambda m: abs(m.start() - near)) if matches else None


def _nearest_longest_run(text: str, span_text: str, near: int) -> re.Match | None:
    words = [stripped for word in span_text.split() if (stripped := word.strip(string.punctuation))]
    for length in range(len(words), 0, -1):
        runs = (_nearest(text, words[start : start + length], near) for start in range(len(words) - length + 1))
        found = [match for match in runs if match is not None]
        if found:
            return min(found, key=lambda m: abs(m.start() - near))
    return None


def read_wsc(path: Path, labeled: bool = True) -> list[Example]:
    """Coreference of a noun phrase (span 1) and a pronoun (span 2) in one text."""
    examples = []
    for where, record in iter_jsonl(path):
        text, target = _field(record, "text", where, str), _field(record, "target", where, dict)
        spans = tuple(
            word_span(
                text,
                _field(target, f"span{i}_index", where, int),
                _field(target, f"span{i}_text", where, str),
                where,
                partial=not labeled,
            )
            for i in (1, 2)
        )
        examples.append(
            Example(text_a=text, spans=spans, fields=(("text", text),), **_target(record, BOOL, where, labeled))
        )
    return examples


def read_diagnostic(path: Path, text_a: str, text_b: str, labels: Sequence[str]) -> list[tuple[Example, dict]]:
    """A SuperGLUE diagnostic (AX-b, AX-g): RTE pairs, each with its label and its ``idx``, and its
    whole record, whose other fields (AX-b's categories) its scores read."""
    rows = []
    for where, record in iter_jsonl(path):
        a, b = _field(record, text_a, where, str), _field(record, text_b, where, str)
        label, idx = _label(record, labels, where), row_id(_field(record, "idx", where), where)
        rows.append((Example(text_a=a, text_b=b, label=label, fields=((text_a, a), (text_b, b)), idx=idx), record))
    return rows


def copa_prompt(premise: str, question: str) -> str:
    """COPA's premise as a question whose answers are the two choices."""
    return f"{premise} What was the {question}?"


def copa_fields(premise: str, question: str, choices: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """COPA's raw texts, which its prompt and choices no longer name (shared with the hub rows)."""
    return ("premise", premise), ("question", question), ("choice1", choices[0]), ("choice2", choices[1])


def multirc_example(
    paragraph: str, question: str, answer: str, label: int | None, group: str, idx: tuple[int, ...] | None = None
) -> Example:
    """One MultiRC answer option, built the same way from the local files and the hub rows."""
    return Example(
        text_a=paragraph,
        text_b=f"{question} {answer}",
        label=label,
        group=group,
        fields=(("paragraph", paragraph), ("question", question), ("answer", answer)),
        idx=idx,
    )


# GLUE -------------------------------------------------------------------------------------


def glue_columns(
    text_a: str,
    text_b: str | None,
    label: str | None,
    labels: Sequence[str] | Score,
    field_names: tuple[str, str] | None = None,
    test_id: str = "index",
) -> Callable[..., list[Example]]:
    """GLUE tsv whose header names the text column(s) and the label column: a label from
    ``labels``, or a number within a ``Score`` range (STS-B). ``field_names``: the hub's names of
    the two text columns (Example.fields), where the file names them otherwise. A test file has
    a row-id column ``test_id`` instead of the label (``index``; QQP's is ``id``), and may have
    others (STS-B's genre, year, ...); ``label`` None: a reader of test files only (MRPC's, whose
    labelled splits come from elsewhere)."""

    names = field_names or (text_a, text_b)
    texts = tuple(column for column in (text_a, text_b) if column is not None)

    def read(path: Path, labeled: bool = True) -> list[Example]:
        examples = []
        for where, row in iter_tsv(path, (*texts, label) if labeled else (test_id, *texts), header=True):
            a = row[text_a]
            b = None if text_b is None else row[text_b]
            fields = ((names[0], a),) if b is None else ((names[0], a), (names[1], b))
            target = _glue_target(row, label if labeled else None, labels, where, test_id)
            examples.append(Example(text_a=a, text_b=b, fields=fields, **target))
        return examples

    return read


def _glue_target(
    row: dict[str, str], label: str | None, labels: Sequence[str] | Score, where: str, test_id: str = "index"
) -> dict:
    """The label (or score) in column ``label`` of a labelled row, or with ``label`` None a test
    row's id in column ``test_id``: the Example's ``label`` or ``idx``."""
    if label is None:
        return {"idx": row_id(row[test_id], where, test_id)}
    value = row[label]
    return {"label": _score(value, labels, where) if isinstance(labels, Score) else _label_index(value, labels, where)}


def _score(value: str, score: Score, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{where}: score {value!r} is not a number") from None
    if not score.low <= number <= score.high:  # nan and inf fail this too
        raise DataError(f"{where}: score {value!r} is outside the task's range [{score.low:g}, {score.high:g}]")
    return number


def read_cola(path: Path, labeled: bool = True) -> list[Example]:
    """CoLA train/dev: no header; columns source, label, original label (``*`` or empty), sentence.
    CoLA test: a header, ``index`` and ``sentence``."""
    if labeled:
        rows = iter_tsv(path, ("source", "label", "original_label", "sentence"), header=False)
    else:
        rows = iter_tsv(path, ("index", "sentence"), header=True)
    examples = []
    for where, row in rows:
        sentence = row["sentence"]
        target = _glue_target(row, "label" if labeled else None, ("0", "1"), where)
        examples.append(Example(text_a=sentence, fields=(("sentence", sentence),), **target))
    return examples


def mrpc_split(validation: bool) -> Callable[[Path], list[Example]]:
    """GLUE MRPC from msr_paraphrase_train.txt, as the GLUE script builds it: validation = the
    pairs listed in dev_ids.tsv beside it, train = all the others."""

    def read(path: Path) -> list[Example]:
        return _read_mrpc(path, path.parent / "dev_ids.tsv", validation)

    return read


def _read_mrpc(path: Path, dev_ids: Path, validation: bool) -> list[Example]:
    if not dev_ids.exists():
        raise DataError(
            f"{dev_ids}: no such file; MRPC's split into train and validation is read from it, beside "
            f"{path.name} (GLUE's download script writes it)"
        )
    listed = {(row["#1 ID"], row["#2 ID"]) for _, row in iter_tsv(dev_ids, ("#1 ID", "#2 ID"), header=False)}
    examples = []
    for where, row in iter_tsv(path, ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), header=True):
        if ((row["#1 ID"], row["#2 ID"]) in listed) == validation:
            a, b = row["#1 String"], row["#2 String"]
            examples.append(
                Example(
                    text_a=a,
                    text_b=b,
                    label=_label_index(row["Quality"], ("0", "1"), where),
                    fields=(("sentence1", a), ("sentence2", b)),
                )
            )
    return examples
