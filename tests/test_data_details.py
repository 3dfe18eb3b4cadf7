"""What the readers and DataModules must get exactly right, beyond a plausible shape: span positions,
row ids and groups, the order of predictions, the matched MNLI sets, the padding of answers, the
split a fallback label comes from, seeded subsets, whole validation sets and target lengths."""

import dataclasses
import json
import re

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from hypermoe.backbones.sources import load_tokenizer, resolve_pretrained
from hypermoe.data.datamodule import TaskDataModule
from hypermoe.data.examples import Example
from hypermoe.data.generative import get_generative_task, row_to_pairs
from hypermoe.data.lm import LMDataModule, to_blocks
from hypermoe.data.readers import DataError
from hypermoe.data.sampling import ResumableDataLoader
from hypermoe.data.seq2seq import Seq2SeqDataModule
from hypermoe.data.sources import hub_example, load_split
from hypermoe.data.submission import write_submission
from hypermoe.data.tasks import get_task


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2"))


@pytest.fixture(scope="module")
def t5_tokenizer(tokenizers_root):
    return load_tokenizer("google/switch-base-8", str(tokenizers_root / "t5"), "T5Tokenizer")


# WSC: the span is the occurrence at the official word index, not just any occurrence of its text
@pytest.mark.parametrize("split", ["train", "validation"])
def test_wsc_span_sits_at_its_official_word_index(split, data_root):
    path = data_root / "superglue" / "WSC" / ("train.jsonl" if split == "train" else "val.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    examples = load_split(get_task("superglue", "wsc"), split, data_root)
    checked = 0
    for record, example in zip(records, examples, strict=True):
        words = record["text"].split(" ")
        for i, span in zip((1, 2), example.spans, strict=True):
            index, first = record["target"][f"span{i}_index"], record["target"][f"span{i}_text"].split()[0]
            if words[index].lower() == first.lower():  # the official index is exact here
                assert span.start == sum(len(w) + 1 for w in words[:index]), (record["idx"], i)
                checked += 1
    assert checked > 100


def test_wsc_labelled_span_text_not_in_the_text_is_an_error(tmp_path):
    row = {"text": "Tom said he left .", "target": {"span1_index": 0, "span2_index": 2, "span1_text": "Tom Jones",
           "span2_text": "he"}, "idx": 0, "label": True}  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="span text 'Tom Jones' does not occur"):
        get_task("superglue", "wsc").readers["train"](path)


# MNLI is read, scored and submitted as its matched sets (no MNLI files in the data root here)
def test_mnli_uses_the_matched_sets():
    mnli = get_task("glue", "mnli")
    assert mnli.files == {"train": "train.tsv", "validation": "dev_matched.tsv", "test": "test_matched.tsv"}
    assert (mnli.hub_split("validation"), mnli.hub_split("test")) == ("validation_matched", "test_matched")
    assert mnli.rows == {"train": 392702, "validation": 9815, "test": 9796}


# Predictions come back in the examples' order (each submission row gets its own prediction)
def test_prediction_dataloader_keeps_the_examples_order(data_root, minilm_tokenizer):
    data = TaskDataModule("superglue", "rte", str(data_root), max_length=32, batch_size=4, eval_batch_size=4)
    data.set_tokenizer(minilm_tokenizer)
    examples = [Example(f"premise {i}", "h", fields=(("premise", f"premise {i}"), ("hypothesis", "h")), idx=i)
                for i in range(10)]  # fmt: skip
    tokens = [row for batch in data.prediction_dataloader(examples) for row in batch["input_ids"]]
    decoded = [data.tokenizer.decode(row, skip_special_tokens=True) for row in tokens]
    assert [int(re.search(r"premise (\d+)", text)[1]) for text in decoded] == list(range(10))


# MultiRC from the hub: exact match groups by (paragraph, question); test ids keep their order
def test_multirc_hub_row_group_and_idx_name_paragraph_question_answer():
    row = {"paragraph": "P.", "question": "Q?", "answer": "A", "idx": {"paragraph": 3, "question": 5, "answer": 7}}
    task = get_task("superglue", "multirc")
    assert hub_example(task, {**row, "label": 1}).group == "3-5"
    assert hub_example(task, {**row, "label": -1}).idx == (3, 5, 7)


# Text-to-text: the majority target comes from the training split
def test_seq2seq_majority_target_is_the_training_splits(tmp_path, t5_tokenizer):
    folder = tmp_path / "superglue" / "RTE"
    folder.mkdir(parents=True)

    def rows(labels):
        return "".join(json.dumps({"premise": "p", "hypothesis": "h", "label": label, "idx": i}) + "\n"
                       for i, label in enumerate(labels))  # fmt: skip

    (folder / "train.jsonl").write_text(rows(["not_entailment"] * 3 + ["entailment"]))
    (folder / "val.jsonl").write_text(rows(["entailment"] * 3 + ["not_entailment"]))
    data = Seq2SeqDataModule("superglue", "rte", str(tmp_path), max_length=32, batch_size=2, eval_batch_size=2)
    data.task = dataclasses.replace(data.task, rows={})
    data.set_tokenizer(t5_tokenizer)
    data.setup("fit")
    assert data.majority_target == "1"


# SQuAD answers are padded like the targets and predictions
def test_squad_answers_with_punctuation_are_padded():
    row = {"question": "Who?", "context": "Mary's statue.", "answers": {"text": ["Mary's statue"], "answer_start": [0]}}
    [pair] = row_to_pairs(get_generative_task("squad"), row, "validation")
    assert pair.answers == ("Mary ' s statue",) and pair.target == "Mary ' s statue"


# Free-text tasks: validation is whole, targets are cut at max_target_length
def test_generative_validation_is_whole_and_targets_are_cut(tmp_path, t5_tokenizer):
    (tmp_path / "xsum").mkdir()
    rows = [{"document": f"document {i}", "summary": "word " * 20 + str(i), "id": str(i)} for i in range(6)]
    for split in ("train", "validation"):
        (tmp_path / "xsum" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = Seq2SeqDataModule("generative", "xsum", str(tmp_path), max_length=32, batch_size=2, eval_batch_size=2,
                             max_target_length=5, max_train_examples=2)  # fmt: skip
    data.set_tokenizer(t5_tokenizer)
    data.setup("fit")
    assert len(data.features["train"]) == 2 and len(data.features["validation"]) == 6
    assert max(len(feature["labels"]) for feature in data.features["train"]) == 5


# Subsampling follows the seed; validation stays whole
def test_task_subsample_depends_on_the_seed(data_root):
    def kept(seed):
        data = TaskDataModule("superglue", "cb", str(data_root), 32, 4, 4, max_train_examples=5, seed=seed)
        return [example.text_a for example in data.examples("train")]

    assert kept(1) != kept(2)


def test_lm_subsample_depends_on_the_seed_and_validation_is_whole(data_root):
    def blocks(seed):
        data = LMDataModule("shakespeare_char", str(data_root), 256, 4, 4, max_train_blocks=5, seed=seed)
        data.set_tokenizer(data.char_vocabulary())
        data.setup("fit")
        return data.blocks

    one, two = blocks(1), blocks(2)
    assert not torch.equal(one["train"], two["train"])
    assert one["validation"].shape == (111_540 // 256, 256)


def test_blocks_of_a_corpus_that_is_an_exact_multiple_keep_the_last_one():
    assert to_blocks(list(range(8)), 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_a_resumed_loader_skips_exactly_the_batches_already_trained_on():
    loader = ResumableDataLoader(list(range(10)), batch_size=2)
    loader.load_state_dict({"batches_yielded": 2})
    assert [batch.tolist() for batch in loader] == [[4, 5], [6, 7], [8, 9]]


# STS-B submissions keep the scores' 3 decimals
def test_stsb_submission_keeps_three_decimals(tmp_path):
    examples = [Example("a", "b", idx=i) for i in range(3)]
    path = write_submission(get_task("glue", "stsb"), examples, [1.234, 2.5, 4.871], tmp_path)
    table = pd.read_csv(path, sep="\t")
    assert table["prediction"].tolist() == pytest.approx([1.234, 2.5, 4.871], abs=1e-6)


def test_a_negative_test_row_id_is_refused(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"premise": "p", "hypothesis": "h", "idx": -1}) + "\n")
    with pytest.raises(DataError, match="is not a row id"):
        get_task("superglue", "rte").readers["test"](path)


# MultiRC exact match: answers of one question share a group id, other questions get their own
def test_group_ids_follow_the_question_groups(data_root, minilm_tokenizer):
    data = TaskDataModule("superglue", "multirc", str(data_root), max_length=32, batch_size=4, eval_batch_size=4)
    data.set_tokenizer(minilm_tokenizer)
    examples = [Example("p", f"q {g}", label=0, group=g) for g in ("0-0", "0-0", "0-1", "1-0", "1-0", "1-1")]
    assert [feature["group"] for feature in data._encode(examples)] == [0, 0, 1, 2, 2, 3]


# A free-text split from the hub keeps the same seeded rows as the local file of that split
def test_hub_rows_are_the_local_files_seeded_draw(tmp_path, monkeypatch):
    import datasets

    from hypermoe.data.generative import load_pairs

    rows = [{"document": f"document {i}", "summary": f"summary {i}", "id": str(i)} for i in range(10)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: datasets.Dataset.from_list(rows))
    (tmp_path / "local" / "xsum").mkdir(parents=True)
    (tmp_path / "local" / "xsum" / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    local = load_pairs("xsum", "validation", tmp_path / "local", max_examples=3, seed=7)
    assert load_pairs("xsum", "validation", tmp_path / "none", max_examples=3, seed=7) == local


# Prediction without a training set: generation may go as long as the longest label target
def test_prediction_generates_up_to_the_longest_label(t5_tokenizer):
    data = Seq2SeqDataModule("glue", "stsb", "/nonexistent", max_length=32, batch_size=2, eval_batch_size=2)
    data.set_tokenizer(t5_tokenizer)
    data.prediction_dataloader([Example("a", "b", fields=(("sentence1", "a"), ("sentence2", "b")), idx=0)])
    targets = [f"{step / 5:.1f}" for step in range(26)]
    assert data.max_target_length == max(len(ids) for ids in t5_tokenizer(text_target=targets)["input_ids"])


# WikiText-2 from the hub: its empty rows are the files' " \n" lines
def test_wikitext_hub_rows_rebuild_the_files_blank_lines(tmp_path, monkeypatch):
    import datasets

    from hypermoe.data.lm import CORPORA, read_text

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: {"text": ["", " = A = \n", "", " b c \n"]})
    corpus = dataclasses.replace(CORPORA["wikitext2"], words=())
    assert read_text(corpus, "validation", tmp_path) == " \n = A = \n \n b c \n"
