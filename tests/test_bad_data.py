"""Bad data is a clear error naming the file and line; nothing is silently dropped.

Each test writes a small file into a data root laid out as ``sources.local_path`` expects and
reads it with the real reader. The rows are real ones, copied from the official files (SuperGLUE
RTE and CB train.jsonl, GLUE RTE, CoLA and SST-2 train.tsv), so the tests run without the data root.
"""

import dataclasses
import json
import logging
import os
import re
from pathlib import Path

import pytest
from helpers import TINY, train_cli
from transformers import AutoTokenizer

from hypermoe.backbones.sources import resolve_pretrained
from hypermoe.data import sources
from hypermoe.data.encoding import encode_all
from hypermoe.data.examples import Example
from hypermoe.data.generative import load_pairs
from hypermoe.data.lm import CORPORA, count_words, read_text
from hypermoe.data.readers import DataError, read_utf8
from hypermoe.data.sources import load_split
from hypermoe.data.tasks import get_task

RTE = [
    {"premise": "No Weapons of Mass Destruction Found in Iraq Yet.",
     "hypothesis": "Weapons of Mass Destruction Found in Iraq.", "label": "not_entailment", "idx": 0},
    {"premise": "Oil prices fall back as Yukos oil threat lifted", "hypothesis": "Oil prices rise.",
     "label": "not_entailment", "idx": 13},
    {"premise": "Lin Piao, after all, was the creator of Mao's \"Little Red Book\" of quotations.",
     "hypothesis": "Lin Piao wrote the \"Little Red Book\".", "label": "entailment", "idx": 26},
    {"premise": "Cyprus, divided or not, joins the EU on the 1st of May.",
     "hypothesis": "Cyprus was divided into two parts on May 1.", "label": "not_entailment", "idx": 34},
    {"premise": "Edward VIII became King in January of 1936 and abdicated in December.",
     "hypothesis": "King Edward VIII abdicated in December 1936.", "label": "entailment", "idx": 39},
]  # fmt: skip
CB = [
    {"premise": "It was a complex language. Not written down but handed down. One might say it was peeled down.",
     "hypothesis": "the language was peeled down", "label": "entailment", "idx": 0},
    {"premise": "``Clever''. Klug means ``clever''. Would you say that Abie was clever?",
     "hypothesis": "Abie was clever", "label": "neutral", "idx": 76},
]  # fmt: skip
GLUE_RTE = (
    "index\tsentence1\tsentence2\tlabel\n"
    "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\tnot_entailment\n"
    '12\tValero Energy Corp., on Monday, said it found "extensive" additional damage at its 250,000-barrel-per-day '
    "Port Arthur refinery.\tValero Energy Corp. produces 250,000 barrels per day.\tentailment\n"
)
COLA = (
    "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
    "gj04\t1\t\tOne more pseudo generalization and I'm giving up.\n"
    "gj04\t0\t*\tThey drank the pub.\n"
)
STSB = "index\tsentence1\tsentence2\tscore\n0\tA plane is taking off.\tAn air plane is taking off.\t5.000\n"
FLUTE = "1\tA man is playing a flute.\tA man is playing a flute.\t"  # the score comes next
WIC = [
    {"word": "place", "sentence1": "Do you want to come over to my place later?",
     "sentence2": "A political system with no place for the less prominent groups.", "idx": 0, "label": False,
     "start1": 31, "start2": 27, "end1": 36, "end2": 32, "version": 1.1},
    {"word": "approach", "sentence1": "Approach a task.", "sentence2": "To approach the city.", "idx": 1,
     "label": False, "start1": 0, "start2": 3, "end1": 8, "end2": 11, "version": 1.1},
]  # fmt: skip
SST2 = "sentence\tlabel\nhide new secretions from the parental units \t0\ncontains no wit , only labored gags \t0\n"
# Texts that are data, not errors: empty, emoji and other non-BMP characters, combining marks,
# right-to-left scripts, zero-width joiners, and the control and separator characters that
# str.splitlines takes for line ends (no tab, newline, carriage return or NUL: those are the format's).
ODD = [
    "",
    "Fuß 😀 👩\u200d💻 \U00020000\U0001d11e \U0001f3f3\ufe0f\u200d\U0001f308",
    "e\u0301te\u0301 n\u0303 \u0928\u093f",
    "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202bembedded\u202c",
    "bell\x07 vt\x0b ff\x0c fs\x1c gs\x1d rs\x1e nel\x85 ls\u2028 ps\u2029 end",
]


def _write(root: Path, relative: str, content: str | bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def _jsonl(rows: list) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _raises(message: str):
    """The error whose message starts with ``message`` (a literal, not a pattern)."""
    return pytest.raises(DataError, match="^" + re.escape(message))


def _load_refused(root: Path, task: tuple[str, str], relative: str, content: str | bytes, message: str) -> None:
    """``content`` written to ``relative``: loading the task's train split raises a DataError
    naming the file, then ``message``."""
    path = _write(root, relative, content)
    with _raises(f"{path}{message}"):
        load_split(get_task(*task), "train", root)


@pytest.fixture(scope="module")
def tokenizer():
    # MiniLM's tokenizer installs offline from a pip package, so this needs no tokenizer folder
    return AutoTokenizer.from_pretrained(resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2"))


# Malformed JSON lines, truncated files ------------------------------------------------------------


def test_malformed_json_line_names_its_line(tmp_path):
    bad = '{"premise": "Oil prices fall back", "hypothesis" "Oil prices rise.", "label": "not_entailment"}'
    path = _write(tmp_path, "superglue/RTE/train.jsonl", _jsonl(RTE[:1]) + bad + "\n" + _jsonl(RTE[2:]))
    with _raises(f"{path}:2: not valid JSON (Expecting ':' delimiter: column 50)"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


def test_jsonl_cut_mid_object_names_the_last_line(tmp_path):
    text = _jsonl(RTE)
    path = _write(tmp_path, "superglue/RTE/train.jsonl", text[: len(text) - 60])  # the 5th row, cut in its middle
    with _raises(f"{path}:5: not valid JSON (Unterminated string starting at: column 100)"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


def test_tsv_row_cut_short_names_the_last_line(tmp_path):
    path = _write(tmp_path, "glue/RTE/train.tsv", GLUE_RTE + "13\tOil prices fall back as Yukos oil threat lifted")
    with _raises(f"{path}:4: 2 tab-separated column(s), expected 4: ['index', 'sentence1', 'sentence2', 'label']"):
        load_split(get_task("glue", "rte"), "train", tmp_path)


def test_not_utf8_names_its_line(tmp_path):
    path = _write(tmp_path, "superglue/RTE/train.jsonl", _jsonl(RTE[:2]).encode() + b'{"premise": "caf\xe9 au lait"}\n')
    with _raises(f"{path}:3: not UTF-8 text (invalid continuation byte: byte 0xe9)"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


def test_a_json_line_that_is_not_an_object_names_its_line(tmp_path):
    path = _write(tmp_path, "superglue/RTE/train.jsonl", _jsonl([RTE[0], ["premise", "hypothesis"]]))
    with _raises(f"{path}:2: expected an object with field 'premise', found ['premise', 'hypothesis']"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


# Missing fields and labels outside the label set --------------------------------------------------


def test_missing_field_names_it_and_the_fields_there_are(tmp_path):
    rows = [RTE[0], {key: value for key, value in RTE[1].items() if key != "hypothesis"}]
    path = _write(tmp_path, "superglue/RTE/train.jsonl", _jsonl(rows))
    with _raises(f"{path}:2: missing field 'hypothesis' (has ['idx', 'label', 'premise'])"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


def test_an_unlabeled_row_in_a_training_file_is_a_missing_label(tmp_path):
    # the test split's file (no labels) where the train split's belongs
    rows = [{key: value for key, value in row.items() if key != "label"} for row in RTE]
    path = _write(tmp_path, "superglue/RTE/train.jsonl", _jsonl(rows))
    with _raises(f"{path}:1: missing field 'label' (has ['hypothesis', 'idx', 'premise'])"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


def test_a_text_field_that_is_null_is_not_text(tmp_path):
    path = _write(tmp_path, "superglue/RTE/train.jsonl", _jsonl([RTE[0], {**RTE[1], "premise": None}]))
    with _raises(f"{path}:2: field 'premise' is None, not a string"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


@pytest.mark.parametrize(
    ("task", "file", "content", "message"),
    [
        (("superglue", "rte"), "superglue/RTE/train.jsonl", _jsonl([RTE[0], {**RTE[1], "label": "neutral"}]),
         ":2: label 'neutral' is not one of ['entailment', 'not_entailment']"),
        (("glue", "sst2"), "glue/SST-2/train.tsv", SST2 + "the greatest musicians \t2\n",
         ":4: label '2' is not one of ['0', '1']"),
        (("glue", "cola"), "glue/CoLA/train.tsv", COLA + "gj04\t*\t*\tThe professor talked us.\n",
         ":4: label '*' is not one of ['0', '1']"),
        (("glue", "stsb"), "glue/STS-B/train.tsv",
         "index\tsentence1\tsentence2\tscore\n0\tA plane is taking off.\tAn air plane is taking off.\tfive\n",
         ":2: score 'five' is not a number"),
        (("glue", "stsb"), "glue/STS-B/train.tsv", STSB + FLUTE + "5.2\n",
         ":3: score '5.2' is outside the task's range [0, 5]"),
        (("glue", "stsb"), "glue/STS-B/train.tsv", STSB + FLUTE + "nan\n",
         ":3: score 'nan' is outside the task's range [0, 5]"),
        (("glue", "stsb"), "glue/STS-B/train.tsv", STSB + FLUTE + "-inf\n",
         ":3: score '-inf' is outside the task's range [0, 5]"),
        (("superglue", "wic"), "superglue/WiC/train.jsonl", _jsonl([WIC[0], {**WIC[1], "end1": 17}]),
         ":2: span start1=0, end1=17 is not inside sentence1 (16 characters): it must satisfy 0 <= start1 < end1"),
        (("superglue", "wic"), "superglue/WiC/train.jsonl", _jsonl([{**WIC[0], "start2": 32}]),
         ":1: span start2=32, end2=32 is not inside sentence2"),
    ],
    ids=["superglue-rte", "sst2", "cola", "stsb", "stsb-above-5", "stsb-nan", "stsb-inf", "wic-past-the-end",
         "wic-empty-span"],
)  # fmt: skip
def test_label_outside_the_label_set_names_its_line(tmp_path, task, file, content, message):
    _load_refused(tmp_path, task, file, content, message)


def test_the_official_score_range_and_spans_hold_on_the_real_rows(tmp_path):
    _write(tmp_path, "glue/STS-B/train.tsv", STSB)
    _write(tmp_path, "superglue/WiC/train.jsonl", _jsonl(WIC))
    (score,) = [
        example.label for example in get_task("glue", "stsb").readers["train"](tmp_path / "glue/STS-B/train.tsv")
    ]
    assert score == 5.0  # the range is inclusive
    wic = get_task("superglue", "wic").readers["train"](tmp_path / "superglue/WiC/train.jsonl")
    assert [ex.text_a[ex.spans[0].start : ex.spans[0].end] for ex in wic] == ["place", "Approach"]


# Paths that exist but are not regular files -------------------------------------------------------


def test_a_folder_where_a_data_file_belongs_is_named(tmp_path):
    path = tmp_path / "superglue/RTE/train.jsonl"
    path.mkdir(parents=True)
    with _raises(f"{path}: not a regular file (a folder)"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


def test_a_named_pipe_where_a_data_file_belongs_is_refused_unread(tmp_path):
    path = tmp_path / "glue/CoLA/train.tsv"
    path.parent.mkdir(parents=True)
    os.mkfifo(path)  # reading it would wait for a writer forever
    with _raises(f"{path}: not a regular file (a named pipe)"):
        load_split(get_task("glue", "cola"), "train", tmp_path)


def test_a_folder_where_a_corpus_file_belongs_is_named_not_missing(tmp_path):
    path = tmp_path / CORPORA["wikitext2"].files["train"]
    path.mkdir(parents=True)
    with _raises(f"{path}: not a regular file (a folder)"):
        read_text(CORPORA["wikitext2"], "train", tmp_path)  # not the hub: the file is there


def test_mrpc_without_its_dev_ids_file_is_named(tmp_path):
    """GLUE's MRPC split into train and validation comes from dev_ids.tsv beside the training file."""
    path = _write(tmp_path, "glue/MRPC/msr_paraphrase_train.txt", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
    with _raises(f"{path.parent / 'dev_ids.tsv'}: no such file; MRPC's split into train and validation is read"):
        get_task("glue", "mrpc").readers["train"](path)
    with _raises(f"{tmp_path / 'gone.tsv'}: no such file"):  # any file that goes between its lookup and its read
        read_utf8(tmp_path / "gone.tsv")


# Empty files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "file", "content", "message"),
    [
        (("superglue", "rte"), "superglue/RTE/train.jsonl", "", ": the file is empty (no rows)"),
        (("superglue", "rte"), "superglue/RTE/train.jsonl", "\n\n\r\n", ": the file is empty (no rows)"),
        (("glue", "cola"), "glue/CoLA/train.tsv", "", ": the file is empty (no rows)"),
        (("glue", "rte"), "glue/RTE/train.tsv", "index\tsentence1\tsentence2\tlabel\n",
         ": the file is empty (a header and no rows)"),
    ],
    ids=["0-bytes", "only-empty-lines", "tsv-0-bytes", "only-a-header"],
)  # fmt: skip
def test_an_empty_file_is_named_empty(tmp_path, task, file, content, message):
    _load_refused(tmp_path, task, file, content, message)


@pytest.mark.parametrize(
    ("corpus", "file", "content"),
    [("wikitext2", "wikitext-2/valid.txt", ""), ("tinyshakespeare", "tinyshakespeare/input.txt", "\n \n\n")],
)
def test_an_empty_corpus_file_is_named_empty(tmp_path, corpus, file, content):
    path = _write(tmp_path, file, content)
    with _raises(f"{path}: the file is empty"):
        read_text(CORPORA[corpus], "validation", tmp_path)


# Wrong delimiters and column counts, a file of the wrong format ----------------------------------


def test_comma_separated_header_names_line_1_and_the_columns(tmp_path):
    path = _write(tmp_path, "glue/RTE/train.tsv", GLUE_RTE.replace("\t", ","))
    with _raises(
        f"{path}:1: the header lacks column(s) ['sentence1', 'sentence2', 'label']; "
        "it has 1 tab-separated column(s): ['index,sentence1,sentence2,label']"
    ):
        load_split(get_task("glue", "rte"), "train", tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (COLA.replace("\t", ","), ":1: 1 tab-separated column(s), expected 4"),
        (COLA + "gj04\t1\t\tThe sailors rode the breeze.\textra\n", ":4: 5 tab-separated column(s), expected 4"),
    ],
    ids=["comma-separated", "a-column-too-many"],
)
def test_headerless_tsv_with_the_wrong_column_count_names_its_line(tmp_path, content, message):
    path = _write(tmp_path, "glue/CoLA/train.tsv", content)
    with _raises(f"{path}{message}: ['source', 'label', 'original_label', 'sentence']"):
        load_split(get_task("glue", "cola"), "train", tmp_path)


def test_jsonl_where_tsv_is_expected_names_the_header(tmp_path):
    path = _write(tmp_path, "glue/RTE/train.tsv", _jsonl(RTE))
    with _raises(f"{path}:1: the header lacks column(s) ['sentence1', 'sentence2', 'label']; it has 1 tab-sep"):
        load_split(get_task("glue", "rte"), "train", tmp_path)


def test_tsv_where_jsonl_is_expected_names_line_1(tmp_path):
    path = _write(tmp_path, "superglue/RTE/train.jsonl", GLUE_RTE)
    with _raises(f"{path}:1: not valid JSON (Expecting value: column 1): tab-separated, not JSON lines?"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


# Files of the wrong task -------------------------------------------------------------------------


def test_cb_file_where_rte_is_expected_names_the_foreign_label(tmp_path):
    path = _write(tmp_path, "superglue/RTE/train.jsonl", _jsonl(CB))  # same fields, other labels
    with _raises(f"{path}:2: label 'neutral' is not one of ['entailment', 'not_entailment']"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


def test_boolq_file_where_rte_is_expected_names_the_missing_field(tmp_path):
    boolq = {"question": "is house tax and property tax are same", "passage": "Property tax -- ...", "idx": 0,
             "label": True}  # fmt: skip
    path = _write(tmp_path, "superglue/RTE/train.jsonl", _jsonl([boolq]))
    with _raises(f"{path}:1: missing field 'premise' (has ['idx', 'label', 'passage', 'question'])"):
        load_split(get_task("superglue", "rte"), "train", tmp_path)


def test_sst2_file_where_cola_is_expected_names_line_1(tmp_path):
    path = _write(tmp_path, "glue/CoLA/train.tsv", SST2)
    with _raises(f"{path}:1: 2 tab-separated column(s), expected 4: ['source', 'label', 'original_label', 'sentence']"):
        load_split(get_task("glue", "cola"), "train", tmp_path)


def test_cola_file_where_sst2_is_expected_names_the_header(tmp_path):
    path = _write(tmp_path, "glue/SST-2/train.tsv", COLA)
    with _raises(f"{path}:1: the header lacks column(s) ['sentence', 'label']; it has 4 tab-separated column(s)"):
        load_split(get_task("glue", "sst2"), "train", tmp_path)


# No row silently skipped: counts -----------------------------------------------------------------


def test_rows_read_are_logged_and_checked_against_the_official_count(tmp_path, caplog):
    path = _write(tmp_path, "superglue/RTE/val.jsonl", _jsonl(RTE))
    task = get_task("superglue", "rte")
    with _raises(f"{path}: read 5 rows for rte validation, expected 277"):
        load_split(task, "validation", tmp_path)
    with caplog.at_level(logging.INFO, logger="hypermoe.data.sources"):
        load_split(dataclasses.replace(task, rows={"validation": 5}), "validation", tmp_path)
    assert f"rte validation: 5 rows from {path}" in caplog.messages


def test_a_row_id_twice_in_a_test_file_is_refused(tmp_path):
    """A submission names each test row once, by its id; a repeated one would drop another row's."""
    rows = [{key: value for key, value in row.items() if key != "label"} for row in RTE[:3]]
    rows[2]["idx"] = rows[0]["idx"]
    path = _write(tmp_path, "superglue/RTE/test.jsonl", _jsonl(rows))
    task = dataclasses.replace(get_task("superglue", "rte"), rows={"test": 3})
    with _raises(f"{path}: row id 0 appears 2 times in rte test; each row's id is unique"):
        load_split(task, "test", tmp_path)


def test_hub_rows_are_checked_against_the_official_count(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_from_hub", lambda task, split: [Example("a", "b", label=0)])
    with _raises("aps/super_glue/rte: read 1 rows for rte validation, expected 277"):
        load_split(get_task("superglue", "rte"), "validation", tmp_path)


def test_a_truncated_corpus_fails_its_token_count(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"  # (2 + 1) + (8 + 1) tokens
    path = _write(tmp_path, "tinyshakespeare/input.txt", text)
    with _raises(f"{path}: 12 whitespace tokens in tinyshakespeare all, expected 242651"):
        read_text(CORPORA["tinyshakespeare"], "train", tmp_path)


def test_empty_lines_hold_no_row_and_a_row_of_tabs_is_a_row(tmp_path):
    # an empty line between rows is passed over (the row count catches a row lost there) ...
    path = _write(tmp_path, "superglue/RTE/train.jsonl", _jsonl(RTE[:2]) + "\n" + _jsonl(RTE[2:]) + "\n\n")
    assert [example.text_a for example in get_task("superglue", "rte").readers["train"](path)] == [
        row["premise"] for row in RTE
    ]
    # ... but a line of nothing but tabs is a row of empty columns, read as such
    path = _write(tmp_path, "glue/RTE/train.tsv", GLUE_RTE + "\t\t\t\n")
    with _raises(f"{path}:4: label '' is not one of ['entailment', 'not_entailment']"):
        load_split(get_task("glue", "rte"), "train", tmp_path)


# Empty strings and odd Unicode are data ----------------------------------------------------------


def test_empty_strings_and_odd_unicode_are_read_and_encoded(tmp_path, tokenizer):
    rows = [{"premise": text, "hypothesis": text[::-1], "label": "entailment", "idx": i} for i, text in enumerate(ODD)]
    jsonl = _write(tmp_path, "superglue/RTE/train.jsonl", _jsonl(rows))  # non-ASCII characters written as such
    tsv = _write(tmp_path, "glue/RTE/train.tsv", "index\tsentence1\tsentence2\tlabel\n"
                 + "".join(f"{i}\t{text}\t{text[::-1]}\tentailment\n" for i, text in enumerate(ODD)))  # fmt: skip
    for benchmark, path in (("superglue", jsonl), ("glue", tsv)):
        examples = get_task(benchmark, "rte").readers["train"](path)
        assert [(example.text_a, example.text_b) for example in examples] == [(text, text[::-1]) for text in ODD]
        features = encode_all(examples, tokenizer, 32)
        assert len(features) == len(ODD)
        for feature in features:
            ids = feature["rows"][0]["input_ids"]
            assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_a_byte_order_mark_and_windows_line_ends_are_not_data(tmp_path):
    path = _write(tmp_path, "glue/CoLA/train.tsv", "\ufeff" + COLA.replace("\n", "\r\n"))
    examples = get_task("glue", "cola").readers["train"](path)
    assert [example.text_a for example in examples] == [line.split("\t")[3] for line in COLA.splitlines()]


def test_line_separators_inside_a_corpus_line_are_text():
    # 4 + 1 and 2 + 1 tokens: U+2028 and U+0085 separate words but do not end lines
    assert count_words(" = A\u2028B = \n one\x85two \n") == 8


def test_line_separators_inside_a_generative_row_are_text(tmp_path):
    row = {"id": "0", "title": "T", "context": "Here\u2028there.", "question": "Where?",
           "answers": {"text": ["Here"], "answer_start": [0]}}  # fmt: skip
    _write(tmp_path, "squad/train.jsonl", _jsonl([row]))
    [pair] = load_pairs("squad", "train", tmp_path)
    assert pair.target == "Here" and "there" in pair.source


# Truncation is counted exactly ------------------------------------------------------------------


def test_only_rows_longer_than_max_length_are_counted_as_truncated(tokenizer, caplog):
    pairs = [
        Example("a b c", "d e"),  # [CLS] 3 [SEP] 2 [SEP] = 8 tokens: fits exactly, nothing cut
        Example("a", "b"),
        Example("a b c", "d e f"),  # 9 tokens
        Example("a b c d", "e f g h"),  # 11 tokens
    ]
    with caplog.at_level(logging.INFO, logger="hypermoe.data.encoding"):
        features = encode_all(pairs, tokenizer, 8)
    assert [len(feature["rows"][0]["input_ids"]) for feature in features] == [8, 5, 8, 8]
    assert caplog.messages == ["2 of 4 rows were longer than max_length=8 and were truncated"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hypermoe.data.encoding"):
        features = encode_all([Example("a b c d e f"), Example("a b c")], tokenizer, 8)
    assert [len(feature["rows"][0]["input_ids"]) for feature in features] == [8, 5]
    assert caplog.messages == []  # a row that fits exactly was not truncated


def test_spans_cut_off_by_truncation_are_counted_and_logged(tmp_path, tokenizer, caplog):
    _write(tmp_path, "superglue/WiC/train.jsonl", _jsonl(WIC))
    examples = get_task("superglue", "wic").readers["train"](tmp_path / "superglue/WiC/train.jsonl")
    with caplog.at_level(logging.WARNING, logger="hypermoe.data.encoding"):
        features = encode_all(examples, tokenizer, 64)
    assert caplog.messages == []  # everything fits
    with caplog.at_level(logging.WARNING, logger="hypermoe.data.encoding"):
        features = encode_all(examples, tokenizer, 12)
    # example 0: "place" is word 9 of sentence 1 and word 5 of sentence 2; 12 tokens keep neither
    assert [[bool(positions) for positions in feature["spans"]] for feature in features] == [
        [False, False],
        [True, True],
    ]
    assert caplog.messages == [
        "2 of 4 spans lie wholly in text cut off by max_length=12 (first in example 0): the span head pools no "
        "token for them (a zero vector); raise data.max_length to keep them"
    ]


def test_bad_data_ends_the_command_with_file_line_and_exit_3(tmp_path):
    path = _write(tmp_path / "data", "superglue/CB/train.jsonl", "")
    result = train_cli(tmp_path, *TINY, "data=superglue", "data.task=cb", f"paths.data_dir={tmp_path / 'data'}")
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert f"bad data: {path}: the file is empty (no rows)" in output
    assert "Traceback" not in output
