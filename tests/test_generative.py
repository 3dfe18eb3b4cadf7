"""The free-text tasks: hub rows become the T5-style text pairs, splits load from local JSON lines or
fail fast offline with a useful error, and the metrics match values worked out by hand.

The hub is unreachable here, so the rows are written by hand in each hub dataset's column layout
(rajpurkar/squad, aps/super_glue record, EdinburghNLP/xsum, abisee/cnn_dailymail dataset cards).
"""

import json
import random
import time

import pytest
import torch
from helpers import compose_config

from hypermoe.data.generative import (
    GENERATIVE_TASKS,
    get_generative_task,
    load_pairs,
    pad_punctuation,
    row_to_pairs,
)
from hypermoe.data.readers import DataError
from hypermoe.data.sources import DataUnavailable
from hypermoe.data.text_metrics import build_text_metrics
from hypermoe.data.text_pairs import TextPair

SQUAD_ROW = {
    "id": "5733be284776f41900661182",
    "title": "University_of_Notre_Dame",
    "context": "Atop the Main Building's gold dome is a golden statue of the Virgin Mary (since 1882).",
    "question": "What sits on top of the Main Building?",
    "answers": {"text": ["a golden statue of the Virgin Mary", "golden statue"], "answer_start": [38, 40]},
}
RECORD_ROW = {
    "passage": "The Eiffel Tower is in Paris.\n@highlight\nIt opened in 1889\n@highlight\nEiffel's firm built it",
    "query": "@placeholder was built for the 1889 World's Fair.",
    "entities": ["Eiffel Tower", "Paris", "Gustave Eiffel", "Tower"],
    "entity_spans": {"text": ["Eiffel Tower", "Paris"], "start": [4, 23], "end": [16, 28]},
    "answers": ["Eiffel Tower", "Tower"],
    "idx": {"passage": 0, "query": 0},
}
RECORD_SOURCE = (
    "record query: @placeholder was built for the 1889 World's Fair. "
    "entities: Eiffel Tower, Paris, Gustave Eiffel, Tower "
    "passage: The Eiffel Tower is in Paris. It opened in 1889. Eiffel's firm built it"
)


def test_pad_punctuation_spaces_symbols_but_keeps_words_whole():
    # "e" + combining acute accent (a mark) stays inside its word, as with the \p{M} class of compacter
    assert pad_punctuation("  François's café (1999), ce\u0301_x!") == "François ' s café ( 1999 ) , ce\u0301_x !"


def test_squad_row_is_a_padded_question_and_context():
    [pair] = row_to_pairs(get_generative_task("squad"), SQUAD_ROW, "validation")
    assert pair == TextPair(
        source="question: What sits on top of the Main Building ? context: Atop the Main Building ' s gold dome "
        "is a golden statue of the Virgin Mary ( since 1882 ) .",
        target="a golden statue of the Virgin Mary",
        answers=("a golden statue of the Virgin Mary", "golden statue"),
    )


def test_record_training_row_gives_one_pair_per_answer():
    pairs = row_to_pairs(get_generative_task("record"), RECORD_ROW, "train")
    answers = ("Eiffel Tower", "Tower")
    assert pairs == [TextPair(RECORD_SOURCE, "Eiffel Tower", answers), TextPair(RECORD_SOURCE, "Tower", answers)]


def test_record_validation_row_gives_one_pair_with_every_answer():
    pairs = row_to_pairs(get_generative_task("record"), RECORD_ROW, "validation")
    assert pairs == [TextPair(RECORD_SOURCE, "Eiffel Tower", ("Eiffel Tower", "Tower"))]


@pytest.mark.parametrize(
    ("task", "row", "source", "target"),
    [
        ("xsum", {"document": "The council met.\nIt voted.", "summary": "A vote was held.", "id": "1"},
         "summarize: The council met.\nIt voted.", "A vote was held."),
        ("cnn_dailymail", {"article": "(CNN) -- Rain fell.", "highlights": "Rain.\nMore rain.", "id": "ab12"},
         "summarize: (CNN) -- Rain fell.", "Rain.\nMore rain."),
    ],
)  # fmt: skip
def test_summarization_row_is_the_document_and_its_summary(task, row, source, target):
    assert row_to_pairs(get_generative_task(task), row, "train") == [TextPair(source, target, (target,))]


def test_task_table_and_data_configs_follow_the_paper(tmp_path):
    source_lengths = {}
    for name in GENERATIVE_TASKS:
        cfg = compose_config("train", ["backbone=switch_tiny", f"data={name}"], tmp_path)
        source_lengths[name] = (cfg.data.task, cfg.data.max_length)
    assert source_lengths == {"squad": ("squad", 384), "record": ("record", 384), "xsum": ("xsum", 1024),
                              "cnn_dailymail": ("cnn_dailymail", 1024)}  # fmt: skip
    assert {name: (task.main_metric, task.max_target_length) for name, task in GENERATIVE_TASKS.items()} == {
        "squad": ("exact_match", 128),
        "record": ("exact_match", 128),
        "xsum": ("rouge1", 128),
        "cnn_dailymail": ("rouge1", 128),
    }
    assert GENERATIVE_TASKS["cnn_dailymail"].hub_config == "3.0.0"
    assert GENERATIVE_TASKS["record"].hub_split("validation") == "validation"


def _write(path, rows, blank_line=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows]
    if blank_line:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_local_jsonl_is_read_before_the_hub(tmp_path):
    _write(tmp_path / "record" / "train.jsonl", [RECORD_ROW, {**RECORD_ROW, "answers": ["Paris"]}], blank_line=True)
    pairs = load_pairs("record", "train", tmp_path)
    assert [pair.target for pair in pairs] == ["Eiffel Tower", "Tower", "Paris"]


def test_max_examples_draws_the_same_seeded_rows(tmp_path):
    rows = [{"document": f"document {i}", "summary": f"summary {i}", "id": str(i)} for i in range(10)]
    _write(tmp_path / "xsum" / "validation.jsonl", rows)
    pairs = load_pairs("xsum", "validation", tmp_path, max_examples=3, seed=7)
    assert [pair.target for pair in pairs] == [f"summary {i}" for i in random.Random(7).sample(range(10), 3)]
    assert load_pairs("xsum", "validation", tmp_path, max_examples=3, seed=7) == pairs
    assert len(load_pairs("xsum", "validation", tmp_path, max_examples=50)) == 10


def test_a_malformed_local_row_names_its_line(tmp_path):
    _write(tmp_path / "squad" / "train.jsonl", [SQUAD_ROW, {"question": "Where?", "context": "Here."}])
    with pytest.raises(DataError, match=r"train\.jsonl:2: not a squad row"):
        load_pairs("squad", "train", tmp_path)


def test_unknown_task_or_split_is_named():
    with pytest.raises(ValueError, match=r"known: \['cnn_dailymail', 'record', 'squad', 'xsum'\]"):
        load_pairs("wikihow", "train", ".")
    with pytest.raises(ValueError, match="no split 'test'"):
        load_pairs("squad", "test", ".")


@pytest.mark.parametrize("name", sorted(GENERATIVE_TASKS))
def test_offline_without_local_file_fails_fast_naming_path_and_hub(name, tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # Both libraries read these at import: set them where they are read, and hide any local cache.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    task = GENERATIVE_TASKS[name]
    start = time.monotonic()
    with pytest.raises(DataUnavailable) as error:
        load_pairs(name, "validation", tmp_path)
    assert time.monotonic() - start < 15
    message = str(error.value)
    assert str(tmp_path / name / "validation.jsonl") in message
    assert task.hub_id in message
    assert repr(task.hub_config) in message


def _values(metrics) -> dict[str, float]:
    return {name: round(float(value), 4) for name, value in metrics.compute().items()}


def test_exact_match_and_f1_after_squad_normalisation():
    metrics = build_text_metrics(("exact_match", "f1"), prefix="val/")
    # Exact after lower-casing and dropping punctuation and articles; the best of two answers.
    metrics.update(["The Eiffel Tower!", "Paris"], [("eiffel tower",), ("London", "paris.")])
    # Tokens {in, paris, france} against {paris}: precision 1/3, recall 1, F1 = 2 * (1/3) / (4/3) = 1/2.
    metrics.update(["in Paris, France"], [("Paris",)])
    assert _values(metrics) == {"val/exact_match": round(2 / 3, 4), "val/f1": round((1 + 1 + 0.5) / 3, 4)}
    metrics.reset()
    metrics.update(["London"], [("Paris",)])
    assert _values(metrics) == {"val/exact_match": 0.0, "val/f1": 0.0}


def test_rouge_f_measures_by_hand():
    metrics = build_text_metrics(("rouge1", "rouge2", "rougeL"), prefix="val/")
    metrics.update(["The cat sat on the mat."], [("the cat lay on a mat",)])
    # Unigrams: the, cat, on, mat shared (4 of 6 each way) -> 2/3. Bigrams: only "the cat" (1 of 5) -> 1/5.
    # Longest common subsequence: the cat on mat (4 of 6) -> 2/3.
    assert _values(metrics) == {"val/rouge1": round(2 / 3, 4), "val/rouge2": 0.2, "val/rougeL": round(2 / 3, 4)}
    shorter = build_text_metrics(("rouge1",), prefix="val/")
    shorter.update(["the cat"], [("the cat sat on the mat",)])  # precision 1, recall 2/6: the F-measure is 1/2
    assert _values(shorter) == {"val/rouge1": 0.5}


@pytest.mark.parametrize("name", sorted(GENERATIVE_TASKS))
def test_every_task_metric_set_builds_without_extra_dependencies(name):
    task = GENERATIVE_TASKS[name]
    metrics = build_text_metrics(task.metrics, prefix="val/")
    metrics.update(["a b"], [("a b",)])
    values = metrics.compute()
    assert list(values) == [f"val/{metric}" for metric in task.metrics]
    assert all(torch.isclose(value, torch.tensor(1.0)) for value in values.values())


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="bleu"):
        build_text_metrics(("bleu",), prefix="")
    metrics = build_text_metrics(("f1",), prefix="")
    with pytest.raises(ValueError, match="2 predictions for 1 answer sets"):
        metrics.update(["a", "b"], [("a",)])
    with pytest.raises(ValueError, match="at least one reference"):
        metrics.update(["a"], [()])
