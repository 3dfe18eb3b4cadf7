"""Every option of every config group composes and instantiates; the CLI forms of README.md and
docs/running.md (single run, multirun, DDP) work as typed."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import CONF, compose_config
from hydra.utils import instantiate

from hypermoe.moe import FFN
from hypermoe.moe.build import VARIANTS
from hypermoe.train import _callbacks, _loggers, build

ROOT = CONF.parent
FAST = ["backbone=bert_tiny", "data=synthetic"]


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("option", _options("model"))
def test_every_model_builds(tmp_path, option):
    cfg = compose_config("train", [*FAST, f"model={option}"], tmp_path)
    data, module = build(cfg)
    layer = VARIANTS[cfg.model.variant].layer  # a class, or for ffn a function that copies the backbone's FFN
    assert type(module.net.moe[0]) is (layer if isinstance(layer, type) else FFN) and data.task.name == "majority"


# a data config each backbone family trains on
_DATA_FOR = {"encoder": "synthetic", "causal_lm": "lm", "seq2seq": "superglue"}
# weights only the hub serves: offline, they must fail with a clear message
_HUB_ONLY = {"gpt2_moe", "switch_base_8"}


@pytest.mark.parametrize("option", _options("backbone"))
def test_every_backbone_builds(tmp_path, option, monkeypatch):
    kind = compose_config("train", [f"backbone={option}"], tmp_path).backbone.kind
    cfg = compose_config("train", [f"backbone={option}", f"data={_DATA_FOR[kind]}", "model=topk"], tmp_path)
    if option in _HUB_ONLY:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(FileNotFoundError, match=f"cannot load pretrained {cfg.backbone.pretrained!r}"):
            build(cfg)
        return
    fallback = cfg.backbone.get("tokenizer_fallback")
    if fallback and not Path(fallback).is_dir():
        pytest.skip(f"tokenizer folder {fallback} is absent (set HYPERMOE_TOKENIZERS)")
    _, module = build(cfg)
    assert len(module.net.moe) == len(module.net.moe_names) > 0
    assert all(type(layer).__name__ == "TopKMoE" for layer in module.net.moe)
    assert module.net.moe[0].router.balance_group == cfg.model.balance_group
    assert module.net.moe[0].dropped_tokens == cfg.model.dropped_tokens


def test_switch_backbones_default_to_transformers_balance_groups_and_the_official_dropped_tokens(tmp_path):
    switch = {"switch_base_8", "switch_tiny"}
    for option in _options("backbone"):
        model = compose_config("train", [f"backbone={option}", "model=topk"], tmp_path).model
        expected = ("sequence", "input") if option in switch else ("batch", "zero")
        assert (model.balance_group, model.dropped_tokens) == expected, option


def test_backbone_and_data_of_different_families_are_refused(tmp_path):
    cfg = compose_config("train", ["backbone=bert_tiny", "data=lm"], tmp_path)
    with pytest.raises(ValueError, match=r"backbone\.kind='encoder' trains on TaskDataModule data"):
        build(cfg)


@pytest.mark.parametrize("option", _options("data"))
def test_every_data_config_instantiates(tmp_path, option, data_root):
    cfg = compose_config("train", [*FAST, f"data={option}", f"paths.data_dir={data_root}"], tmp_path)
    data = instantiate(cfg.data)
    assert data.task.benchmark == cfg.data.get("benchmark", "lm")


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks", "debug", "experiment"])
def test_every_run_option_instantiates(tmp_path, group, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for option in _options(group):
        cfg = compose_config("train", [*FAST, f"{group}={option}"], tmp_path)
        if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
            continue  # composes (above); a Trainer on a GPU needs one
        loggers = _loggers(cfg, None)
        modes = {"val/loss": "min", "val/accuracy": "max"}
        callbacks = _callbacks(cfg, "accuracy", modes, bool(loggers))
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        assert trainer.max_epochs >= 1 or trainer.fast_dev_run


@pytest.mark.parametrize(
    "overrides",
    [["experiment=synthetic_tiny"], ["table=char_lm_cpu"], ["backbone=nanogpt_char", "data=lm"]],
    ids=["experiment", "table", "step_recipe"],
)
def test_debug_limit_wins_over_an_experiment_a_table_and_a_recipe(tmp_path, overrides):
    """A one-minute trial whatever else is composed: the experiment's 3 epochs, the character
    recipe's 2,000 steps with a validation every 250 (which 10 steps would never reach)."""
    trainer = compose_config("train", [*overrides, "debug=limit"], tmp_path).trainer
    assert (trainer.max_epochs, trainer.max_steps, trainer.limit_train_batches) == (2, -1, 5)
    assert (trainer.val_check_interval, trainer.check_val_every_n_epoch) == (None, 1)


def test_slurm_launcher_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.partition == "gpu"


def test_moe_layer_placement(tmp_path):
    _, every = build(compose_config("train", [*FAST, "model=topk", "model.moe_layers=every_2"], tmp_path))
    _, listed = build(compose_config("train", [*FAST, "model=topk", "model.moe_layers=[0]"], tmp_path))
    assert len(every.net.moe) == 1 and len(listed.net.moe) == 1
    with pytest.raises(ValueError, match=r"model.moe_layers=\[5\] must be block indices in \[0, 2\)"):
        build(compose_config("train", [*FAST, "model=topk", "model.moe_layers=[5]"], tmp_path))


def _cli(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "train.py", *args, f"paths.log_dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow
def test_multirun_as_typed_in_the_readme(tmp_path, data_root):
    args = ["--multirun", "model=topk,hypermoe", "data.task=cb,rte", "seed=1,2", "backbone=bert_tiny",
            "debug=fast_dev_run", "logger=none", f"paths.data_dir={data_root}"]  # fmt: skip
    result = _cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in tmp_path.glob("train/multiruns/*/*/metrics.json")]
    runs = {(r["model"], r["task"], r["seed"]) for r in records}
    assert runs == {(m, f"superglue/{t}", s) for m in ("topk", "hypermoe") for t in ("cb", "rte") for s in (1, 2)}


def _expert_changes(run_dir: Path) -> dict[int, dict[str, float]]:
    """step -> {layer: expert_change} from the run's CSV log."""
    rows = csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open())
    changes: dict[int, dict[str, float]] = {}
    for row in rows:
        for key, value in row.items():
            if key.endswith("/expert_change") and value:
                changes.setdefault(int(row["step"]), {})[key] = float(value)
    return changes


@pytest.mark.slow  # three 2-process DDP runs of a tiny BERT
def test_a_ddp_run_resumed_compares_each_processs_tokens_with_its_own_last_validation(tmp_path, data_root):
    """WNLI's 71 validation rows split 36 / 35 over two processes. Each process's first choices of
    the validation before the stop are in the checkpoint, so the resumed run's expert_change is the
    straight run's; with process 0's alone, process 1 skipped the reduction process 0 waited in."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(Path(__file__).parent)}
    common = ["trainer=ddp", "backbone=bert_tiny", "data=glue", "data.task=wnli", "trainer.max_epochs=3",
              "+trainer.limit_train_batches=3", "logger=csv", f"paths.data_dir={data_root}",
              "optimizer.lr=1e-3"]  # fmt: skip
    stop = ["+callbacks.stop._target_=helpers.StopAfterEpochs", "+callbacks.stop.epochs=2"]

    def train(name: str, *overrides: str) -> Path:
        command = [sys.executable, "train.py", *common, *overrides, f"hydra.run.dir={tmp_path / name}"]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stderr[-3000:]
        return tmp_path / name

    straight = _expert_changes(train("straight"))
    stopped = train("stopped", *stop)
    resumed = _expert_changes(train("resumed", f"ckpt_path={stopped / 'checkpoints' / 'last.ckpt'}"))
    assert len(straight) == 2 and set(resumed) == {max(straight)}  # validations 2 and 3; the resumed run's 3rd
    for layer, change in straight[max(straight)].items():
        assert resumed[max(straight)][layer] == pytest.approx(change, abs=1e-6)


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path, data_root):
    args = ["trainer=ddp", "backbone=bert_tiny", "data.task=rte", "debug=limit", "trainer.limit_val_batches=1.0",
            "trainer.max_epochs=1", "logger=csv", f"paths.data_dir={data_root}"]  # fmt: skip
    result = _cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stdout + result.stderr
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("train/runs/*/metrics.json")]
    # 277 validation examples split over 2 ranks without repeats: accuracy is k / 277, not k / 278
    correct = record["final"]["val/accuracy"] * 277
    assert record["steps"] > 0 and abs(correct - round(correct)) < 1e-3
    # each layer's expert load, pooled over both ranks' validation tokens: a distribution
    assert record["expert_load"] and all(sum(load) == pytest.approx(1.0) for load in record["expert_load"].values())
