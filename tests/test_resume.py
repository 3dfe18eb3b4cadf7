"""Resume equivalence (2 epochs straight == 1 epoch, stop, resume for 1 more) and eval.py
reproducing the validation metrics of a saved checkpoint."""

import pytest
import torch
from helpers import QUIET, compose_config

from hypermoe.errors import ConfigError
from hypermoe.evaluate import run_eval
from hypermoe.train import run

TINY = ["experiment=synthetic_tiny", "model=hypermoe", *QUIET, "trainer.deterministic=true"]


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_resume_at_an_epoch_boundary_equals_an_uninterrupted_run(tmp_path):
    straight = run(compose_config("train", [*TINY, "trainer.max_epochs=2"], tmp_path / "straight"))
    stop = ["+callbacks.stop._target_=helpers.StopAfterEpochs", "+callbacks.stop.epochs=1"]
    run(compose_config("train", [*TINY, "trainer.max_epochs=2", *stop], tmp_path / "first"))
    resumed_cfg = [*TINY, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"]
    resumed = run(compose_config("train", resumed_cfg, tmp_path / "resumed"))
    assert resumed["steps"] == straight["steps"]
    # a resumed run keeps checkpointing into the folder it resumed from
    assert not (tmp_path / "resumed" / "checkpoints").exists()
    a, b = _weights(tmp_path / "straight/checkpoints/last.ckpt"), _weights(tmp_path / "first/checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
    assert resumed["final"] == pytest.approx(straight["final"])


def test_a_resume_from_a_save_at_a_validation_step_keeps_that_validation(tmp_path):
    """The periodic last.ckpt comes before the validation due at its step, and is saved again after
    it: resumed from there, the run neither skips nor repeats that validation."""
    every_8 = ["trainer.max_epochs=1", "+trainer.val_check_interval=8", "trainer.check_val_every_n_epoch=null",
               "checkpoint_every_n_steps=8"]  # fmt: skip
    copy, last = tmp_path / "killed" / "last.ckpt", tmp_path / "straight" / "checkpoints"
    keep = ["+callbacks.copy._target_=helpers.CopyLastCheckpoint", "+callbacks.copy.step=24",
            f"+callbacks.copy.dirpath={last}", f"+callbacks.copy.copy={copy}"]  # fmt: skip
    straight = run(compose_config("train", [*TINY, *every_8, *keep], tmp_path / "straight"))
    resumed = run(compose_config("train", [*TINY, *every_8, f"ckpt_path={copy}"], tmp_path / "resumed"))
    assert [entry["step"] for entry in straight["history"]] == [8, 16, 24, 32]
    assert resumed["history"] == straight["history"] and resumed["best"] == straight["best"]


def test_eval_reproduces_the_validation_metrics(tmp_path):
    trained = run(compose_config("train", [*TINY, "trainer.max_epochs=2", "callbacks.model_checkpoint.save_top_k=0"],
                                 tmp_path / "train"))  # fmt: skip
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    evaluated = run_eval(compose_config("eval", [f"ckpt_path={checkpoint}"], tmp_path / "eval"))
    assert evaluated["validation"]["val/accuracy"] == pytest.approx(trained["final"]["val/accuracy"])
    assert evaluated["validation"]["val/loss"] == pytest.approx(trained["final"]["val/loss"], rel=1e-5)
    assert not [key for key in evaluated["validation"] if key.endswith("_best")]  # no best of one validation
    assert evaluated["data"]["max_length"] == compose_config("train", TINY, tmp_path).data.max_length  # recorded


def test_eval_on_a_data_group_names_each_setting_that_is_not_the_checkpoints(tmp_path, caplog):
    """data=<group> brings that group's whole config: a max_length the model was not trained with
    changes the scores, so eval says so and records what it used."""
    run(compose_config("train", [*TINY, "trainer.max_epochs=1", "data.max_length=12"], tmp_path / "train"))
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    given = ["data=synthetic", "data.eval_batch_size=32", f"ckpt_path={checkpoint}"]
    with caplog.at_level("WARNING", logger="hypermoe.evaluate"):
        evaluated = run_eval(compose_config("eval", given, tmp_path / "eval"))
    assert "evaluating with data settings other than the checkpoint's: " in caplog.text
    assert "data.max_length=" in caplog.text and "(trained with 12)" in caplog.text
    assert evaluated["data"]["eval_batch_size"] == 32 and evaluated["data"]["max_length"] != 12
    caplog.clear()
    with caplog.at_level("WARNING", logger="hypermoe.evaluate"):  # one key alone: the checkpoint's config with it
        evaluated = run_eval(compose_config("eval", [f"ckpt_path={checkpoint}", "+data.eval_batch_size=8"], tmp_path))
    assert evaluated["data"]["eval_batch_size"] == 8 and evaluated["data"]["max_length"] == 12
    assert "data.eval_batch_size=8 (trained with 64)" in caplog.text and "max_length" not in caplog.text


def test_eval_on_another_data_config_and_data_root(tmp_path, data_root):
    overrides = ["backbone=bert_tiny", *QUIET, "model=topk", "data.task=rte", "debug=limit"]
    run(compose_config("train", [*overrides, f"paths.data_dir={data_root}"], tmp_path / "train"))
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    # GLUE's RTE has SuperGLUE RTE's labels: the trained head can score it, from any data root
    glue = ["data=glue", "data.task=rte", f"paths.data_dir={data_root}", f"ckpt_path={checkpoint}"]
    evaluated = run_eval(compose_config("eval", glue, tmp_path / "eval"))
    assert evaluated["task"] == "glue/rte" and evaluated["trained_on"] == "superglue/rte"
    assert 0.0 <= evaluated["validation"]["val/accuracy"] <= 1.0
    cb = ["data=superglue", "data.task=cb", f"paths.data_dir={data_root}", f"ckpt_path={checkpoint}"]
    with pytest.raises(ValueError, match=r"trained on superglue/rte .*superglue/cb needs .*cannot score that task"):
        run_eval(compose_config("eval", cb, tmp_path / "eval_cb"))
    # the data sizes train.py checks, eval.py checks too (resolved against the checkpoint's backbone)
    bad = [*glue, "data.max_length=0", "data.eval_batch_size=abc"]
    with pytest.raises(ConfigError, match=r"data.eval_batch_size='abc' must be an integer >= 1\n.*data.max_length=0"):
        run_eval(compose_config("eval", bad, tmp_path / "eval_bad"))


@pytest.mark.slow
def test_eval_reproduces_perplexity_and_scores_another_corpus(tmp_path, data_root):
    lm = [
        "backbone=gpt2_tiny",
        *QUIET,
        "model=hypermoe",
        "data=lm",
        "data.block_size=64",
        f"paths.data_dir={data_root}",
    ]
    few = ["+trainer.limit_val_batches=2", "data.eval_batch_size=16"]  # the same first 32 blocks each time
    short = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", *few]
    trained = run(compose_config("train", [*lm, *short], tmp_path / "train"))
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    again = [f"ckpt_path={checkpoint}", f"paths.data_dir={data_root}", few[0]]
    evaluated = run_eval(compose_config("eval", again, tmp_path / "eval"))
    assert evaluated["validation"]["val/perplexity"] == pytest.approx(trained["final"]["val/perplexity"], rel=1e-5)
    assert evaluated["expert_load"].keys() == trained["expert_load"].keys() and trained["expert_load"]
    for layer, load in trained["expert_load"].items():
        assert evaluated["expert_load"][layer] == pytest.approx(load, abs=1e-6), layer
    wikitext = ["data=lm", "data.task=wikitext2", "data.block_size=64", "data.batch_size=8", few[0], few[1]]
    other = run_eval(compose_config("eval", [*wikitext, f"ckpt_path={checkpoint}", f"paths.data_dir={data_root}"],
                                    tmp_path / "eval_wikitext"))  # fmt: skip
    assert other["task"] == "lm/wikitext2" and other["trained_on"] == "lm/tinyshakespeare"
    assert other["validation"]["val/perplexity"] > 1
