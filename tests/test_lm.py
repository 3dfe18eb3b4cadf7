"""Language-modelling data and perplexity: blocks, splits, official counts, the metric itself."""

import math

import pytest
import torch

from hypermoe.data.lm import CORPORA, LMDataModule, read_text, to_blocks
from hypermoe.data.readers import DataError
from hypermoe.data.sources import DataUnavailable
from hypermoe.lit_module import CausalLMLitModule


def test_blocks_drop_the_partial_tail():
    blocks = to_blocks(list(range(10)), 4)
    assert blocks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(DataError, match="3 tokens make no block of 4"):
        to_blocks([1, 2, 3], 4)
    with pytest.raises(ValueError, match=r"data\.block_size=1 must be >= 2"):
        to_blocks([1, 2, 3], 1)


def test_tinyshakespeare_is_split_90_10_by_characters(data_root):
    corpus = CORPORA["tinyshakespeare"]
    train, validation = read_text(corpus, "train", data_root), read_text(corpus, "validation", data_root)
    assert len(train) + len(validation) == 1_115_394 and len(train) == 1_003_854
    assert train.startswith("First Citizen:") and (train + validation).endswith("\n")


def test_wikitext2_local_files_have_the_official_token_counts(data_root, tmp_path):
    corpus = CORPORA["wikitext2"]
    assert read_text(corpus, "validation", data_root).startswith(" \n = Homarus gammarus = \n")
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "valid.txt").write_text(" = A = \n one two \n")  # (3 + 1) + (2 + 1) tokens
    with pytest.raises(DataError, match="7 whitespace tokens in wikitext2 validation, expected 217646"):
        read_text(corpus, "validation", tmp_path)


def test_wikitext2_train_without_file_or_hub_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataUnavailable, match=r"no local file at .*wikitext-2/train.txt.*Salesforce/wikitext"):
        read_text(CORPORA["wikitext2"], "train", tmp_path)


def test_unknown_corpus_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"choose one of \['shakespeare_char', 'tinyshakespeare', 'wikitext2'\]"):
        LMDataModule("ptb", "/data", 8, 2, 2)


class _FixedLogits(torch.nn.Module):
    """A 'model' whose next-token distribution is the same fixed one at every position."""

    def __init__(self, probs: list[float]):
        super().__init__()
        self.logits = torch.tensor(probs).log()
        self.moe, self.moe_names = torch.nn.ModuleList(), []

    def forward(self, input_ids, attention_mask=None):
        return self.logits.expand(*input_ids.shape, -1)


def test_perplexity_is_exp_of_the_mean_next_token_loss():
    probs = [0.5, 0.25, 0.125, 0.125]
    module = CausalLMLitModule(_FixedLogits(probs), CORPORA["tinyshakespeare"], {}, torch.optim.AdamW, 0.0)
    batch = {"input_ids": torch.tensor([[0, 1, 2, 3], [3, 0, 0, 1]])}
    module.validation_step(batch, 0)
    # predicted tokens: 1, 2, 3 and 0, 0, 1 -> -log p = ln 4, ln 8, ln 8, ln 2, ln 2, ln 4
    mean_nll = (2 * math.log(4) + 2 * math.log(8) + 2 * math.log(2)) / 6
    assert module.val_loss.compute().item() == pytest.approx(mean_nll, rel=1e-6)
    logged = {}
    module._log_validation = logged.update  # what the epoch's end hands to the loggers
    module.on_validation_epoch_end()
    assert logged["perplexity"].item() == pytest.approx(4.0)  # 2^(mean bits) = 2^((2+3+3+1+1+2)/6) = 2^2
