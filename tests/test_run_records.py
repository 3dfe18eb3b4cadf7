"""A run's inputs and records hold what they say: checkpoints whose bytes are damaged are refused
before their weights are used, checkpoint folders are tried before training, a resume keeps its
data order and steps, metrics.json is strict JSON, a run without a result does not exit 0, and
Ctrl-C saves the step it stopped at like SIGTERM. One tiny run's checkpoint serves the checks."""

import json
import math
import re
import shutil
import zipfile
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from helpers import QUIET, compose_config, train_cli
from omegaconf import OmegaConf
from torchmetrics.classification import MulticlassAccuracy

from hypermoe.checkpoint_checks import check_resume_settings, ensure_checkpoint_folders, load_checkpoint
from hypermoe.data.lm import get_corpus
from hypermoe.data.tasks import get_task
from hypermoe.errors import ConfigError, NoResultError
from hypermoe.evaluate import run_eval
from hypermoe.lit_module import MoELitModule
from hypermoe.train import run

TINY = ["experiment=synthetic_tiny", "model=topk", *QUIET, "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def last_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run(compose_config("train", [*TINY, "+trainer.limit_train_batches=4"], out))
    return out / "checkpoints" / "last.ckpt"


def _flip_a_weight_byte(source, target) -> str:
    """A copy of ``source`` with one byte inside its largest record (a weight tensor) changed:
    the archive's structure is intact, so torch.load still reads it. Returns the record's name."""
    shutil.copy(source, target)
    with zipfile.ZipFile(target) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(target.read_bytes())
    local_header = record.header_offset
    name_length = int.from_bytes(data[local_header + 26 : local_header + 28], "little")
    extra_length = int.from_bytes(data[local_header + 28 : local_header + 30], "little")
    offset = local_header + 30 + name_length + extra_length + record.file_size // 2
    data[offset] ^= 0xFF
    target.write_bytes(bytes(data))
    return record.filename


def test_a_checkpoint_with_a_damaged_weight_is_refused_before_use(last_ckpt, tmp_path):
    damaged = tmp_path / "last.ckpt"
    record = _flip_a_weight_byte(last_ckpt, damaged)
    torch.load(damaged, map_location="cpu", weights_only=True)  # what the check is for: it still unpickles
    message = f"ckpt_path='{damaged}' is damaged: record '{record}' fails its CRC-32 check"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_checkpoint(str(damaged))
    load_checkpoint(str(last_ckpt))  # the intact one passes


def test_an_unwritable_checkpoint_folder_is_refused_before_training(tmp_path):
    (tmp_path / "a_file").write_text("")
    folder = tmp_path / "a_file" / "checkpoints"  # under a regular file: cannot be made
    overrides = [*TINY, f"callbacks.last_checkpoint.dirpath={folder}"]
    with pytest.raises(ConfigError, match=re.escape(f"callbacks.last_checkpoint.dirpath='{folder}': checkpoints")):
        run(compose_config("train", overrides, tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_new_run_does_not_write_into_a_folder_holding_checkpoints(tmp_path):
    """Pointed at another run's checkpoint folder, Lightning would replace its last.ckpt."""
    folder = tmp_path / "other_run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(b"another run's")
    overrides = [*TINY, f"callbacks.last_checkpoint.dirpath={folder}"]
    message = f"callbacks.last_checkpoint.dirpath='{folder}' already holds checkpoints (last.ckpt): a new run would"
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(compose_config("train", overrides, tmp_path / "run"))
    assert (folder / "last.ckpt").read_bytes() == b"another run's"
    resumed = OmegaConf.create(
        {"ckpt_path": str(folder / "last.ckpt"), "callbacks": {"last": {"dirpath": str(folder)}}}
    )
    ensure_checkpoint_folders(resumed)  # resuming writes there on purpose


def test_a_resumed_run_tries_the_folder_it_will_write_beside_its_checkpoint(tmp_path):
    (tmp_path / "a_file").write_text("")
    configured = tmp_path / "a_file" / "checkpoints"  # cannot be made, but a resumed run does not write there
    resumed = OmegaConf.create(
        {
            "ckpt_path": str(tmp_path / "run" / "last.ckpt"),
            "callbacks": {"last_checkpoint": {"dirpath": str(configured)}},
        }
    )
    ensure_checkpoint_folders(resumed)
    assert (tmp_path / "run").is_dir()


# what decides a run's data order, its steps and its learning-rate schedule (docs/reliability.md)
DATA_ORDER_STEPS_AND_SCHEDULE = ["seed", "data.seed", "callbacks.batch_reseed.seed", "data.batch_size",
                                 "data.max_train_examples", "data.max_train_blocks",
                                 "trainer.accumulate_grad_batches", "trainer.max_epochs", "trainer.max_steps",
                                 "trainer.limit_train_batches", "optimizer.lr", "scheduler.schedule",
                                 "scheduler.warmup_ratio", "scheduler.min_lr_ratio"]  # fmt: skip


@pytest.mark.parametrize("key", DATA_ORDER_STEPS_AND_SCHEDULE)
def test_a_resume_that_changes_any_key_of_the_data_order_or_the_schedule_is_refused(key):
    stored = OmegaConf.create({"ckpt_path": "last.ckpt"})
    OmegaConf.update(stored, key, 1)
    requested = stored.copy()
    OmegaConf.update(requested, key, 2)
    with pytest.raises(ConfigError, match=re.escape(f"{key}=2 (checkpoint: 1)")):
        check_resume_settings({"hypermoe": {"config": OmegaConf.to_container(stored)}}, requested)


def test_a_resume_that_changes_the_data_order_is_refused_unless_asked(last_ckpt, tmp_path, caplog):
    overrides = [*TINY, f"ckpt_path={last_ckpt}", "seed=7", "data.batch_size=8", "+trainer.limit_train_batches=4"]
    message = "seed=7 (checkpoint: 42); data.batch_size=8 (checkpoint: 16). Resume with the checkpoint's values"
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(compose_config("train", overrides, tmp_path / "strict"))
    copy = tmp_path / "copy" / "last.ckpt"  # resumed runs write beside their checkpoint: keep the shared one
    copy.parent.mkdir()
    shutil.copy(last_ckpt, copy)
    overrides = [*TINY, f"ckpt_path={copy}", "seed=7", "resume_strict=false", "+trainer.limit_train_batches=4"]
    with caplog.at_level("WARNING", logger="hypermoe.checkpoint_checks"):
        run(compose_config("train", [*overrides, "trainer.max_epochs=2"], tmp_path / "lenient"))
    assert (
        "resume_strict=false: resuming with changed data order, steps or learning-rate schedule: seed=7 " in caplog.text
    )


def test_a_resume_that_changes_the_learning_rate_schedule_is_refused(last_ckpt, tmp_path):
    """The schedule is rebuilt over the new step count: two more epochs would restart a decayed
    learning rate near its peak."""
    overrides = [*TINY, f"ckpt_path={last_ckpt}", "trainer.max_epochs=9", "optimizer.lr=0.5"]
    message = "trainer.max_epochs=9 (checkpoint: 1); trainer.limit_train_batches=None (checkpoint: 4); optimizer.lr=0.5"
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(compose_config("train", overrides, tmp_path / "longer"))


def test_a_resume_on_another_number_of_processes_is_refused_before_training(last_ckpt, tmp_path, monkeypatch):
    """Two processes halve each one's share of an epoch and double a step's batch. Refused once the
    trainer has counted its processes, before any of them starts (``fit`` is not reached)."""
    assert torch.load(last_ckpt, weights_only=True)["hypermoe"]["world_size"] == 1

    def fit(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(pl.Trainer, "fit", fit)
    overrides = [*TINY, f"ckpt_path={last_ckpt}", "+trainer.limit_train_batches=4", "trainer=ddp"]
    message = "2 training processes, trainer.devices x trainer.num_nodes (checkpoint: 1). Resume with the checkpoint's"
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(compose_config("train", overrides, tmp_path / "two"))
    with pytest.raises(AssertionError, match="training started"):  # resume_strict=false lets it go on
        run(compose_config("train", [*overrides, "resume_strict=false"], tmp_path / "lenient"))


def _strict_json(path):
    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_run_that_never_validated_says_so_in_strict_json(tmp_path):
    metrics = run(compose_config("train", [*TINY, "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=0"],
                                 tmp_path))  # fmt: skip
    saved = _strict_json(tmp_path / "metrics.json")
    assert saved == metrics and saved["validated"] is False
    assert saved["final"] == {} and saved["best"] == {"accuracy": None}  # not -Infinity


@pytest.mark.parametrize(
    "task, history, best",
    [  # CB: macro-F1 then accuracy; the accuracy of the best-F1 validation, not the best accuracy
        (get_task("superglue", "cb"), [(0.5, 0.8), (0.6, 0.7), (0.6, 0.75), (math.nan, 0.9)],
         {"f1_macro": 0.6, "accuracy": 0.7}),
        (get_corpus("shakespeare_char"), [(1.9, 6.7), (1.8, 6.0), (1.85, 6.4)], {"loss": 1.8, "perplexity": 6.0}),
    ],
)  # fmt: skip
def test_the_best_metrics_come_from_the_validation_where_the_main_metric_was_best(task, history, best):
    module = SimpleNamespace(task=task, val_best={}, val_history=[
        {"step": step, **{f"val/{name}": value for name, value in zip(task.metrics, values, strict=True)}}
        for step, values in enumerate(history)])  # fmt: skip
    assert MoELitModule.best_metrics(module) == best


def test_a_run_whose_metric_is_nan_has_no_result_and_does_not_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(MulticlassAccuracy, "compute", lambda self: torch.tensor(float("nan")))
    with pytest.raises(NoResultError, match=re.escape("val/accuracy is not a number at the last validation")):
        run(compose_config("train", [*TINY, "+trainer.limit_train_batches=2"], tmp_path))
    saved = _strict_json(tmp_path / "metrics.json")
    assert saved["validated"] is True and saved["final"]["val/accuracy"] is None


@pytest.mark.slow
def test_ctrl_c_saves_the_step_prints_the_resume_line_and_exits_130(tmp_path):
    sigint = ["+callbacks.sigint._target_=helpers.SigintAtStep", "+callbacks.sigint.step=3"]
    stopped = train_cli(tmp_path, *TINY, "checkpoint_every_n_steps=0", *sigint)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 130, output[-3000:]  # 128 + SIGINT, as a shell reports Ctrl-C
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4  # the step it stopped after
    assert "Ctrl-C (SIGINT) at step 4 (epoch 0): the run stopped before it finished" in output
    assert f"Resume with ckpt_path={last}" in output and "Traceback" not in output


@pytest.mark.parametrize("given", [[], ["ckpt_path=''"]])
def test_eval_without_a_checkpoint_says_which_key(tmp_path, given):
    with pytest.raises(ConfigError, match=re.escape("ckpt_path is required: the checkpoint to load")):
        run_eval(compose_config("eval", given, tmp_path))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+trainer.limit_val_batches=0"], "trainer.limit_val_batches=0 leaves split=validation no batch to evaluate"),
        (["+trainer.limit_val_batches=0.0"], "trainer.limit_val_batches=0.0 leaves split=validation no batch"),
        (["+trainer.limit_val_batches=abc"], "trainer.limit_val_batches='abc' must be an integer >= 0 (batches)"),
        (["split=test", "+trainer.limit_predict_batches=0"], "trainer.limit_predict_batches=0 leaves split=test no"),
    ],
)
def test_eval_checks_its_trainer_settings_before_loading_anything(last_ckpt, tmp_path, overrides, message):
    """limit_val_batches=0 ended in an IndexError on validate's empty result; 'abc' in a message naming no key."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_eval(compose_config("eval", [f"ckpt_path={last_ckpt}", *overrides], tmp_path))


def test_a_run_folder_moved_before_a_resume_keeps_its_record_of_the_best_epoch(tmp_path):
    """Lightning drops ModelCheckpoint's record where the folder differs from the one it was saved in:
    the resumed run's first validation then counted as the best whatever its score, and the best
    epoch's file stayed beside it unrecorded (two epoch files with save_top_k=1)."""
    few = [*TINY[:-1], "trainer.max_epochs=4", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]
    stop = ["+callbacks.stop._target_=helpers.StopAfterEpochs", "+callbacks.stop.epochs=2"]
    run(compose_config("train", [*few, *stop], tmp_path / "first"))
    shutil.copytree(tmp_path / "first", tmp_path / "moved")
    last = tmp_path / "moved" / "checkpoints" / "last.ckpt"
    states = torch.load(last, weights_only=True)["callbacks"]
    (key,) = [key for key in states if "monitor" in key]
    assert key.startswith("ModelCheckpoint{")  # Lightning's key: checkpoints of either class resume with the other
    record = states[key]
    assert record["dirpath"] == str((tmp_path / "first" / "checkpoints").resolve())  # saved there
    metrics = run(compose_config("train", [*few, f"ckpt_path={last}"], tmp_path / "resumed"))
    kept = sorted(path.name for path in last.parent.glob("epoch*.ckpt"))
    assert len(kept) == 1, kept
    assert metrics["steps"] == 8 and list((tmp_path / "first" / "checkpoints").glob("epoch*.ckpt"))  # left alone
