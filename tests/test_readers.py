"""Every reader on the real files of the data root: official row counts, sane first rows."""

import os
from pathlib import Path

import pytest

from hypermoe.data.readers import DataError
from hypermoe.data.sources import DataUnavailable, load_split, local_path
from hypermoe.data.tasks import SPLITS, TASKS, get_task

DATA = Path(os.environ.get("HYPERMOE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"data root {DATA} is absent (set HYPERMOE_DATA)")
CASES = [(b, name, split) for b, tasks in TASKS.items() for name in tasks for split in SPLITS]


@needs_data
@pytest.mark.parametrize(("benchmark", "name", "split"), CASES, ids=["/".join(c) for c in CASES])
def test_reader_gives_the_official_row_count(benchmark, name, split):
    task = get_task(benchmark, name)
    path = local_path(task, split, DATA)
    if not path.exists():
        pytest.skip(f"{path} is not in the data root (not distributed in ../shared/data)")
    examples = load_split(task, split, DATA)
    assert len(examples) == task.rows[split]
    labels = {example.label for example in examples}
    if task.kind == "regression":
        assert min(labels) >= 0 and max(labels) <= 5
    else:
        assert labels <= set(range(task.num_labels)) and len(labels) > 1
    for example in examples[:50]:
        assert example.text_a
        for span in example.spans:  # spans point at the words they name
            text = example.text_a if span.segment == 0 else example.text_b
            assert 0 <= span.start < span.end <= len(text)


@needs_data
def test_span_readers_point_at_the_target_words():
    wsc = load_split(get_task("superglue", "wsc"), "validation", DATA)[0]
    assert [wsc.text_a[s.start : s.end] for s in wsc.spans] == ["anyone", "him"]
    wic = load_split(get_task("superglue", "wic"), "validation", DATA)[0]
    assert wic.text_a[wic.spans[0].start : wic.spans[0].end] == "class"
    copa = load_split(get_task("superglue", "copa"), "validation", DATA)[0]
    assert copa.text_a == "The man turned on the faucet. What was the effect?" and len(copa.choices) == 2


@needs_data
def test_multirc_groups_answers_by_question():
    examples = load_split(get_task("superglue", "multirc"), "validation", DATA)
    assert len({example.group for example in examples}) == 953  # official question count


def test_missing_files_and_no_hub_give_a_clear_message(tmp_path):
    with pytest.raises(DataUnavailable, match=r"no local file at .*superglue/RTE/val\.jsonl.*HYPERMOE_DATA"):
        load_split(get_task("superglue", "rte"), "validation", tmp_path)


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match=r"data.task='rtee' is not a superglue task; choose one of \['boolq'"):
        get_task("superglue", "rtee")


def test_qqp_test_rows_take_their_id_from_its_id_column(tmp_path):
    """QQP's test.tsv names its row ids ``id``; the other GLUE test files name them ``index``."""
    path = tmp_path / "test.tsv"
    path.write_text("id\tquestion1\tquestion2\n0\tWhat is X?\tWhat's X?\n1\tIs Y?\tIs Z?\n", encoding="utf-8")
    examples = get_task("glue", "qqp").readers["test"](path)
    assert [(example.idx, example.text_a) for example in examples] == [(0, "What is X?"), (1, "Is Y?")]


@needs_data
def test_wrong_row_count_is_an_error(tmp_path):
    folder = tmp_path / "superglue" / "CB"
    folder.mkdir(parents=True)
    lines = (DATA / "superglue" / "CB" / "val.jsonl").read_text().splitlines()
    (folder / "val.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="read 55 rows for cb validation, expected 56"):
        load_split(get_task("superglue", "cb"), "validation", tmp_path)


@needs_data
@pytest.mark.parametrize("split", SPLITS)
def test_every_wsc_span_is_its_span_text(split):
    import json

    path = DATA / "superglue" / "WSC" / ("train.jsonl" if split == "train" else "val.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    examples = load_split(get_task("superglue", "wsc"), split, DATA)
    for record, example in zip(records, examples, strict=True):
        for i, span in zip((1, 2), example.spans, strict=True):
            found = " ".join(example.text_a[span.start : span.end].split()).lower()
            assert found == " ".join(record["target"][f"span{i}_text"].split()).lower(), record["idx"]
