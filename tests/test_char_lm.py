"""Character-level Tiny Shakespeare on nanoGPT's CPU "baby GPT": the vocabulary, the splits, the
model's size against nanoGPT's own definition, a short run that learns, and the saved vocabulary
that checkpoints, eval and resumed runs read instead of the text."""

import json
import re
import shutil

import pandas as pd
import pytest
import torch
from helpers import QUIET, compose_config

from hypermoe.data.characters import CharVocabulary, UnknownCharacter
from hypermoe.data.lm import CORPORA, LMDataModule, read_text
from hypermoe.data.readers import DataError
from hypermoe.errors import ConfigError
from hypermoe.evaluate import run_eval
from hypermoe.sample import generate, run_sample
from hypermoe.train import build, run

CHAR = ["backbone=nanogpt_char", "data=lm", "data.task=shakespeare_char"]
INPUT = "tinyshakespeare/input.txt"
# A short run: 30 steps, validated at steps 15 and 30.
SHORT = ["backbone.recipe.max_steps=30", "backbone.recipe.val_check_interval=15", "trainer.log_every_n_steps=1"]
FEW_VAL = "+trainer.limit_val_batches=20"  # of the 146 validation batches: enough to compare, quick


def test_vocabulary_round_trips_the_text_and_has_nanogpts_65_characters(data_root):
    text = (data_root / INPUT).read_text(encoding="utf-8")
    train = read_text(CORPORA["shakespeare_char"], "train", data_root)
    vocabulary = CharVocabulary.from_text(train)
    # nanoGPT's prepare.py prints these 65, built from the whole file
    assert "".join(vocabulary.chars) == "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    assert vocabulary.decode(vocabulary.encode(text)) == text


def test_unknown_character_names_itself_and_its_line():
    vocabulary = CharVocabulary("ab\n")
    with pytest.raises(UnknownCharacter, match=r"character 'Z' \(U\+005A\) at character 4 \(line 2, column 2\)"):
        vocabulary.encode("ab\naZb")
    with pytest.raises(ValueError, match="lists each character once"):
        CharVocabulary("aa")


def test_splits_are_nanogpts_90_10_in_blocks_of_64(data_root):
    data = LMDataModule("shakespeare_char", str(data_root), block_size=64, batch_size=12, eval_batch_size=12)
    data.set_tokenizer(data.char_vocabulary())
    data.setup("fit")
    # nanoGPT: "train has 1,003,854 tokens", "val has 111,540 tokens"; the partial last block is dropped
    assert data.blocks["train"].shape == (1_003_854 // 64, 64)
    assert data.blocks["validation"].shape == (111_540 // 64, 64)


def nanogpt_parameters(vocab_size: int, block_size: int, n_layer: int, n_embd: int, bias: bool) -> int:
    """The parameters of nanoGPT's ``GPT`` (model.py), module by module, lm_head tied to wte."""
    d, b = n_embd, int(bias)
    layer_norm = d + b * d
    attention = (d * 3 * d + b * 3 * d) + (d * d + b * d)  # c_attn, c_proj
    mlp = (d * 4 * d + b * 4 * d) + (4 * d * d + b * d)  # c_fc, c_proj
    block = layer_norm + attention + layer_norm + mlp
    return vocab_size * d + block_size * d + n_layer * block + layer_norm  # wte, wpe, h, ln_f


@pytest.mark.parametrize(("expert_init", "copies"), [("independent", False), ("upcycle", True)])
def test_the_backbones_expert_init_decides_whether_experts_start_as_copies(tmp_path, data_root, expert_init, copies):
    overrides = [*CHAR, "model=topk", *QUIET, f"paths.data_dir={data_root}", f"backbone.expert_init={expert_init}"]
    _, module = build(compose_config("train", overrides, tmp_path))
    first, second = (ffn.fc_in.weight for ffn in module.net.moe[0].experts.ffns[:2])
    assert torch.equal(first, second) == copies


def test_ffn_model_has_the_parameters_of_nanogpt_at_the_same_size(tmp_path, data_root):
    cfg = compose_config("train", [*CHAR, "model=ffn", *QUIET, f"paths.data_dir={data_root}"], tmp_path)
    _, module = build(cfg)
    ours = sum(p.numel() for p in module.net.parameters())  # the tied head counted once
    # GPT-2 has biases everywhere: nanoGPT's bias=True. Its CPU run keeps train.py's default bias=False,
    # which leaves out the biases of ln_1, c_attn, c_proj, ln_2, c_fc, c_proj and ln_f: 4 * 11d + d = 5,760.
    assert ours == nanogpt_parameters(65, 64, n_layer=4, n_embd=128, bias=True) == 809_856
    assert nanogpt_parameters(65, 64, n_layer=4, n_embd=128, bias=False) == 809_856 - 5_760


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, data_root):
    """One 30-step HyperMoE run on the real text (a copy the tests may alter), shared by the checks below."""
    root = tmp_path_factory.mktemp("data")
    (root / "tinyshakespeare").mkdir()
    shutil.copy(data_root / INPUT, root / INPUT)
    out = tmp_path_factory.mktemp("run")
    overrides = [*CHAR, "model=hypermoe", *SHORT, FEW_VAL, "logger=csv", "~callbacks.progress_bar"]
    cfg = compose_config("train", [*overrides, "+trainer.enable_progress_bar=false", f"paths.data_dir={root}"], out)
    return {"metrics": run(cfg), "out": out, "root": root}


def test_short_run_lowers_the_training_loss_and_records_its_curve(short_run):
    logged = pd.read_csv(next(short_run["out"].glob("csv/*/metrics.csv")))
    losses = logged.dropna(subset=["train/task_loss"])["train/task_loss"].tolist()
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3  # nats per character
    metrics = short_run["metrics"]
    assert [entry["step"] for entry in metrics["history"]] == [15, 30]
    assert metrics["best"]["loss"] == min(entry["val/loss"] for entry in metrics["history"])
    assert metrics["main_metric"] == "loss" and metrics["steps"] == 30
    # from the second validation on, each layer's share of tokens whose first-choice expert moved
    changes = {key: value for key, value in metrics["history"][1].items() if key.startswith("moe/")}
    assert set(changes) == {f"moe/layer{i}/expert_change" for i in range(4)}
    assert all(0 <= value <= 1 for value in changes.values()) and not any("moe/" in k for k in metrics["history"][0])
    assert json.loads((short_run["out"] / "metrics.json").read_text())["history"] == metrics["history"]


def _text_with(root, at: str, character: str) -> None:
    """Tiny Shakespeare with one character changed to ``character``, in the training 90 % or in
    the validation 10 %."""
    text = (root / INPUT).read_text(encoding="utf-8")
    index = 1000 if at == "train" else int(len(text) * 0.9) + 1000
    (root / INPUT).write_text(text[:index] + character + text[index + 1 :], encoding="utf-8")


def test_checkpoint_and_eval_use_the_saved_vocabulary(short_run, tmp_path):
    out, metrics = short_run["out"], short_run["metrics"]
    saved = CharVocabulary.load(out / "vocabulary.json")
    assert len(saved) == 65
    # A training text with a 66th character would give another vocabulary (and another model);
    # eval reads the checkpoint's instead, and scores the same validation text as training did.
    altered = tmp_path / "data"
    shutil.copytree(short_run["root"], altered)
    _text_with(altered, "train", "@")
    best = next((out / "checkpoints").glob("epoch*.ckpt"))
    overrides = [f"ckpt_path={best}", f"paths.data_dir={altered}", FEW_VAL, "+trainer.enable_progress_bar=false"]
    cfg = compose_config("eval", overrides, tmp_path / "eval")
    result = run_eval(cfg)
    assert result["validation"]["val/loss"] == pytest.approx(metrics["best"]["loss"], rel=1e-5)


def test_resume_reads_the_saved_vocabulary_and_names_a_character_it_lacks(short_run, tmp_path):
    altered = tmp_path / "data"
    shutil.copytree(short_run["root"], altered)
    _text_with(altered, "train", "@")
    last = short_run["out"] / "checkpoints" / "last.ckpt"
    overrides = [*CHAR, "model=hypermoe", *SHORT, *QUIET, f"ckpt_path={last}", f"paths.data_dir={altered}"]
    with pytest.raises(DataError, match=r"input.txt: shakespeare_char train split .*'@' \(U\+0040\) at character 1000"):
        run(compose_config("train", overrides, tmp_path / "resumed"))


def test_validation_character_outside_the_vocabulary_is_an_error_naming_it(short_run, tmp_path):
    altered = tmp_path / "data"
    shutil.copytree(short_run["root"], altered)
    _text_with(altered, "validation", "~")
    data = LMDataModule("shakespeare_char", str(altered), block_size=64, batch_size=12, eval_batch_size=12)
    data.set_tokenizer(data.char_vocabulary())  # from the training text, which has no "~"
    with pytest.raises(DataError, match=r"validation split .*'~' \(U\+007E\) at character 1000 \(line \d+, column"):
        data.setup("validate")


def test_samples_continue_the_start_in_the_saved_vocabulary(short_run, tmp_path):
    last = short_run["out"] / "checkpoints" / "last.ckpt"
    overrides = [f"ckpt_path={last}", "start=ROMEO:", "num_samples=2", "max_new_tokens=40", "seed=7"]
    first = run_sample(compose_config("sample", overrides, tmp_path / "a"))
    again = run_sample(compose_config("sample", overrides, tmp_path / "b"))
    vocabulary = set(CharVocabulary.load(short_run["out"] / "vocabulary.json").chars)
    assert first == again and len(first) == 2  # the seed fixes the draw
    for sample in first:
        assert sample.startswith("ROMEO:") and len(sample) == len("ROMEO:") + 40 and set(sample) <= vocabulary
    assert (tmp_path / "a" / "samples.txt").read_text(encoding="utf-8").startswith(first[0])
    with pytest.raises(ConfigError, match=r"temperature=0 must be a finite number > 0"):
        run_sample(compose_config("sample", [*overrides, "temperature=0"], tmp_path / "c"))
    with pytest.raises(
        ConfigError, match=r"start='ROMEO: é': character 'é' \(U\+00E9\) at character 7 .*not in the voc"
    ):
        run_sample(compose_config("sample", [*overrides, "start='ROMEO: é'"], tmp_path / "d"))
    # near 0 the draw is the most likely token whatever the seed, where dividing first overflowed to NaN
    greedy = [*overrides, "temperature=1e-50", "top_k=null", "num_samples=1"]
    assert run_sample(compose_config("sample", greedy, tmp_path / "e")) == run_sample(
        compose_config("sample", [*greedy, "seed=8"], tmp_path / "f")
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("start=1984", "start=1984 is not text: Hydra reads an unquoted number, true/false or null as a value; "
         "quote it as start=\"'1984'\""),
        ("start=0", "start=0 is not text"),
        ("seed=null", "seed=None must be an integer in [0, 2**64)"),
        ("seed=1.5", "seed=1.5 must be an integer in [0, 2**64)"),
        ("top_k=true", "top_k=True must be an integer >= 1, or null"),
        ("num_samples=true", "num_samples=True must be an integer >= 1"),
        ("temperature=inf", "temperature=inf must be a finite number > 0"),
    ],
)  # fmt: skip
def test_sampling_settings_are_checked_before_the_checkpoint_is_read(tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_sample(compose_config("sample", [f"ckpt_path={tmp_path / 'none.ckpt'}", override], tmp_path))


class _Logits(torch.nn.Module):
    """A stand-in language model: ``logits(ids)`` for every position."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, ids):
        return self.logits(ids)


def test_sampling_conditions_on_the_last_block_size_tokens():
    """A context longer than the model's block keeps its most recent tokens."""
    windows = []

    def logits(ids):
        windows.append(ids.tolist())
        return torch.zeros(ids.shape[0], ids.shape[1], 5)

    out = generate(_Logits(logits), torch.tensor([[0, 1, 2, 3]]), 3, 2, temperature=1.0, top_k=None,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert windows == [out[:, i + 2 : i + 4].tolist() for i in range(3)]


def test_top_k_sampling_draws_among_the_k_most_likely_tokens_only():
    def logits(ids):
        return torch.tensor([0.0, 0.5, 3.0, 2.9]).expand(ids.shape[0], ids.shape[1], 4)

    drawn = generate(_Logits(logits), torch.zeros(64, 1, dtype=torch.long), 1, 8, temperature=1.0, top_k=1,
                     generator=torch.Generator().manual_seed(0))[:, -1]  # fmt: skip
    assert drawn.tolist() == [2] * 64  # token 3, nearly as likely, is never drawn
