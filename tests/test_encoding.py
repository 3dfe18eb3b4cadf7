"""Tokenized features and batches: spans land on their words, choices and groups line up."""

import pytest
import torch
from transformers import AutoTokenizer

from hypermoe.backbones.sources import resolve_pretrained
from hypermoe.data.encoding import collate, encode_all
from hypermoe.data.sources import load_split
from hypermoe.data.tasks import get_task


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2"))


def _words_at(tokenizer, feature, span_index):
    ids = [feature["rows"][0]["input_ids"][i] for i in feature["spans"][span_index]]
    return tokenizer.decode(ids)


def test_span_positions_cover_the_target_words(tokenizer, data_root):
    wsc = encode_all(load_split(get_task("superglue", "wsc"), "validation", data_root)[:1], tokenizer, 128)[0]
    assert (_words_at(tokenizer, wsc, 0), _words_at(tokenizer, wsc, 1)) == ("anyone", "him")
    wic = encode_all(load_split(get_task("superglue", "wic"), "validation", data_root)[:1], tokenizer, 128)[0]
    assert _words_at(tokenizer, wic, 0) == "class" and _words_at(tokenizer, wic, 1) == "class"
    # the second span lies in the second segment
    assert wic["spans"][1][0] > wic["rows"][0]["input_ids"].index(tokenizer.sep_token_id)


def test_batches_of_each_shape(tokenizer, data_root):
    copa = encode_all(load_split(get_task("superglue", "copa"), "validation", data_root)[:3], tokenizer, 64)
    batch = collate(copa, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 6 and batch["num_choices"] == 2
    assert batch["labels"].tolist() == [1, 1, 0]
    wic = collate(encode_all(load_split(get_task("superglue", "wic"), "validation", data_root)[:4], tokenizer, 64), 0)
    assert wic["span_masks"].shape[:2] == (4, 2) and wic["span_masks"].shape[2] == wic["input_ids"].shape[1]
    assert torch.all(wic["span_masks"].sum(-1) >= 1)
    stsb = collate(encode_all(load_split(get_task("glue", "stsb"), "validation", data_root)[:2], tokenizer, 64), 0)
    assert stsb["labels"].dtype == torch.float32 and stsb["labels"].tolist() == [5.0, 4.75]
    # padding positions are masked out
    assert torch.all((batch["input_ids"] == tokenizer.pad_token_id) == (batch["attention_mask"] == 0))


def test_multiple_choice_rows_hold_each_example_own_choices_in_order(tokenizer, data_root):
    """The label indexes the choices: row i of an example must be its premise with its choice i."""
    examples = load_split(get_task("superglue", "copa"), "validation", data_root)[:3]
    for example, feature in zip(examples, encode_all(examples, tokenizer, 64), strict=True):
        expected = [tokenizer(example.text_a, choice)["input_ids"] for choice in example.choices]
        assert [row["input_ids"] for row in feature["rows"]] == expected


def test_multirc_batches_group_the_answers_by_question(tokenizer, data_root):
    """Exact match is scored per question: the batch carries each answer's question."""
    examples = load_split(get_task("superglue", "multirc"), "validation", data_root)[:8]
    features = encode_all(examples, tokenizer, 64)
    ids: dict[str, int] = {}
    for feature in features:  # as TaskDataModule numbers them
        feature["group"] = ids.setdefault(feature["group"], len(ids))
    groups = collate(features, 0)["groups"].tolist()
    assert groups == [ids[example.group] for example in examples] and len(set(groups)) < len(groups)


def test_truncation_keeps_max_length(tokenizer, data_root):
    examples = load_split(get_task("superglue", "multirc"), "validation", data_root)[:5]
    features = encode_all(examples, tokenizer, 48)
    assert all(len(f["rows"][0]["input_ids"]) == 48 for f in features)  # passages are long
    # the question and answer (second segment) survive truncation: the passage is cut
    for example, feature in zip(examples, features, strict=True):
        ids = feature["rows"][0]["input_ids"]
        second = ids[ids.index(tokenizer.sep_token_id) + 1 : -1]
        assert tokenizer.decode(second).split()[0] == example.text_b.lower().split()[0]
