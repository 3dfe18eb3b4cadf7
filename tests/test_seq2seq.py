"""Text-to-text data and generation-based evaluation: real files through the real T5 tokenizer,
scored by the same metrics as the classification path. The net here is a stand-in whose
``generate`` answers a fixed string, so the scores are known in advance: it tests the
scoring, not a model."""

import json

import lightning.pytorch as pl
import pytest
import torch

from hypermoe.backbones.sources import load_tokenizer
from hypermoe.data.seq2seq import IGNORE_INDEX, Seq2SeqDataModule, sources_without_their_last_field
from hypermoe.data.sources import load_split
from hypermoe.data.tasks import get_task
from hypermoe.data.text2text import to_text_pair
from hypermoe.lit_module import Seq2SeqLitModule, wrong_answer


@pytest.fixture(scope="module")
def t5(tokenizers_root):
    return load_tokenizer("google/switch-base-8", str(tokenizers_root / "t5"), "T5Tokenizer")


def _datamodule(t5, benchmark, task, data_dir, **kwargs):
    data = Seq2SeqDataModule(benchmark, task, str(data_dir), max_length=64, batch_size=4, eval_batch_size=64, **kwargs)
    data.set_tokenizer(t5)
    return data


def test_rte_pairs_are_tokenized_and_padded(t5, data_root):
    data = _datamodule(t5, "superglue", "rte", data_root)
    data.setup("fit")
    assert len(data.features["train"]) == 2490 and len(data.features["validation"]) == 277
    assert data.max_target_length == 3  # "▁", "0" or "1", "</s>": every label fits, none is cut
    batch = next(iter(data.val_dataloader()))
    assert t5.decode(batch["input_ids"][0]).startswith("superglue-rte premise:")
    assert batch["input_ids"].shape[1] <= 64
    for labels, mask in zip(batch["labels"], batch["decoder_attention_mask"], strict=True):
        real = labels[labels != IGNORE_INDEX]  # padding only after the target, which ends in </s>
        assert real[-1] == t5.eos_token_id and mask.sum() == len(real) and (labels[len(real) :] == IGNORE_INDEX).all()
    assert batch["class_label"].shape == (64,) and set(batch["class_label"].tolist()) <= {0, 1}


def test_sources_that_keep_none_of_their_last_field_are_counted_and_warned_of(t5, data_root, caplog):
    """Cut at their end, as the reference cuts them, long RTE sources lose their hypothesis."""
    data = Seq2SeqDataModule("superglue", "rte", str(data_root), max_length=128, batch_size=4, eval_batch_size=64)
    data.set_tokenizer(t5)
    texts = [to_text_pair(data.task, example).source for example in load_split(data.task, "validation", data_root)]
    sources = t5(texts, truncation=True, max_length=128)
    lost = sources_without_their_last_field(sources, texts, "hypothesis")
    for row in range(len(texts)):  # what survives the cut after "hypothesis:", read back as text
        kept = t5.decode(sources["input_ids"][row], skip_special_tokens=True)
        hypothesis = kept.split(" hypothesis:")[-1] if " hypothesis:" in kept else ""
        assert (row in lost) == (not hypothesis.strip()), (row, kept[-80:])
    assert 0 < len(lost) < len(texts)
    with caplog.at_level("WARNING", logger="hypermoe.data.seq2seq"):
        data.setup("validate")
    assert f"{len(lost)} of 277 rte validation sources keep none of their last field 'hypothesis'" in caplog.text


class _Answers(torch.nn.Module):
    """Teacher-forced logits of zeros; ``generate`` returns ``text`` for every row."""

    def __init__(self, tokenizer, text: str):
        super().__init__()
        self.ids = torch.tensor([tokenizer.pad_token_id, *tokenizer(text).input_ids])
        self.moe, self.moe_names, self.vocab = torch.nn.ModuleList(), [], len(tokenizer)
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask, labels, decoder_attention_mask=None):
        return self.weight + torch.zeros(*labels.shape, self.vocab)

    def generate(self, input_ids, attention_mask, **kwargs):
        return self.ids.expand(input_ids.shape[0], -1)


def _validate(net, task, data, tokenizer) -> dict[str, float]:
    module = Seq2SeqLitModule(net, task, {}, torch.optim.AdamW, 0.0, tokenizer=tokenizer)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer.validate(module, datamodule=data, verbose=False)[0]


def test_generated_labels_are_scored_by_the_classification_metrics(t5, data_root):
    data = _datamodule(t5, "superglue", "rte", data_root)
    task = data.task
    entailment = sum(ex.label == 0 for ex in load_split(task, "validation", data_root)) / 277
    results = _validate(_Answers(t5, "0"), task, data, t5)
    assert results["val/accuracy"] == pytest.approx(entailment) and results["val/invalid"] == 0
    results = _validate(_Answers(t5, "maybe"), task, data, t5)  # names no label: every answer wrong
    assert results["val/accuracy"] == 0 and results["val/invalid"] == 1


def test_generated_answers_are_scored_against_every_answer(t5, tmp_path):
    (tmp_path / "squad").mkdir()
    rows = [
        {"id": "1", "title": "t", "context": "Paris is in France.", "question": "Where is Paris?",
         "answers": {"text": ["France", "in France"], "answer_start": [12, 9]}},
        {"id": "2", "title": "t", "context": "Berlin is in Germany.", "question": "Where is Berlin?",
         "answers": {"text": ["Germany"], "answer_start": [13]}},
    ]  # fmt: skip
    for split in ("train", "validation"):
        (tmp_path / "squad" / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = _datamodule(t5, "generative", "squad", tmp_path)
    results = _validate(_Answers(t5, "in France"), data.task, data, t5)
    assert results["val/exact_match"] == pytest.approx(0.5)  # right for Paris, wrong for Berlin
    assert results["val/f1"] == pytest.approx(0.5)


def test_an_unparseable_output_scores_as_wrong():
    cb, stsb = get_task("superglue", "cb"), get_task("glue", "stsb")
    assert [wrong_answer(cb, gold) for gold in (0, 1, 2)] == [1, 2, 0]
    assert wrong_answer(stsb, 4.2) == 0.0 and wrong_answer(stsb, 1.0) == 5.0
