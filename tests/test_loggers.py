"""Logging: W&B offline (one run per job, finished, and resumed into the same run), and routing
statistics under their own step."""

import csv
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import PROJECT, compose_config

from hypermoe.callbacks.routing_stats import RoutingStatsLogger
from hypermoe.train import run

TINY = ["experiment=synthetic_tiny", "model=topk", "~callbacks.progress_bar", "+trainer.enable_progress_bar=false"]


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_wandb_offline_run_is_finished_and_resumed_into_the_same_run(tmp_path, wandb_offline):
    import wandb

    stop = ["+callbacks.stop._target_=helpers.StopAfterEpochs", "+callbacks.stop.epochs=1"]
    first = [*TINY, "logger=wandb", "trainer.max_epochs=2", *stop]
    run(compose_config("train", first, tmp_path / "first"))
    assert wandb.run is None  # finished after the job
    runs = os.listdir(tmp_path / "first" / "wandb")
    first_id = next(name for name in runs if name.startswith("offline-run-")).rsplit("-", 1)[-1]
    resumed = [*TINY, "logger=wandb", "trainer.max_epochs=2", f"ckpt_path={tmp_path}/first/checkpoints/last.ckpt"]
    run(compose_config("train", resumed, tmp_path / "resumed"))
    assert wandb.run is None
    resumed_runs = os.listdir(tmp_path / "resumed" / "wandb")
    assert any(name.endswith(first_id) for name in resumed_runs), (first_id, resumed_runs)


def test_csv_logger_writes_metrics(tmp_path):
    run(compose_config("train", [*TINY, "logger=csv", "trainer.max_epochs=1"], tmp_path))
    metrics = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/accuracy", "val/accuracy_best", "train/aux/balance"} <= set(metrics)
    assert any(name.startswith("moe/layer0/") for name in metrics)


def test_each_metric_of_the_task_logs_its_own_best(tmp_path, data_root):
    """MRPC scores F1 and accuracy: both keep a best-so-far, not only the main metric."""
    overrides = ["backbone=bert_tiny", "data=glue", "data.task=mrpc", f"paths.data_dir={data_root}", "debug=limit"]
    run(compose_config("train", [*overrides, *TINY[2:], "logger=csv"], tmp_path))
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    for name in ("f1", "accuracy"):
        logged = [float(row[f"val/{name}"]) for row in rows if row.get(f"val/{name}")]
        best = [float(row[f"val/{name}_best"]) for row in rows if row.get(f"val/{name}_best")]
        assert logged and best == [max(logged[: i + 1]) for i in range(len(logged))], name


def _routing_entropies(run_dir) -> dict[int, float]:
    rows = csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open())
    return {
        int(row["step"]): float(row["moe/layer0/router_entropy"]) for row in rows if row["moe/layer0/router_entropy"]
    }


def test_routing_statistics_are_written_under_their_own_step(tmp_path):
    """Every 10 steps of a 21-step epoch while Lightning writes every 10th step (steps 9 and 19):
    the values of steps 0, 10 and 20, as a run writing every step has them, none held back or lost."""
    common = [
        *TINY,
        "logger=csv",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=21",
        "+trainer.limit_val_batches=1",
    ]
    run(compose_config("train", [*common, "routing_log_every=10", "trainer.log_every_n_steps=10"], tmp_path / "tenth"))
    run(compose_config("train", [*common, "routing_log_every=1", "trainer.log_every_n_steps=1"], tmp_path / "every"))
    every = _routing_entropies(tmp_path / "every")
    assert sorted(every) == list(range(21))
    assert _routing_entropies(tmp_path / "tenth") == {step: every[step] for step in (0, 10, 20)}


def test_a_failing_job_still_finishes_its_wandb_run(tmp_path, wandb_offline):
    import wandb

    failing = [*TINY, "logger=wandb", "trainer.accelerator=gpu"]  # no GPU here: the Trainer fails
    with pytest.raises(Exception, match="gpu"):
        run(compose_config("train", failing, tmp_path))
    assert wandb.run is None


def test_wandb_runs_of_a_grid_have_names_of_their_own_and_carry_the_runs_tags(tmp_path):
    """An experts x top-k grid would otherwise give six W&B runs one name; a table's or a sweep's
    tag (the run's ``tags``) would be in the config only."""
    from hypermoe.train import _loggers

    names = set()
    for experts, top_k in [(4, 1), (4, 2), (8, 1)]:
        overrides = ["logger=wandb", "model=hypermoe", f"model.num_experts={experts}", f"model.top_k={top_k}"]
        cfg = compose_config("train", [*overrides, "tags=[experts_topk]"], tmp_path)
        (logger,) = _loggers(cfg, resumed_wandb_id=None)
        names.add(logger._wandb_init["name"])  # what wandb.init gets, without starting a run
        assert logger._wandb_init["tags"] == ["hypermoe", "superglue", "cb", "experts_topk"]
    assert names == {"hypermoe-N4k1-cb-seed42", "hypermoe-N4k2-cb-seed42", "hypermoe-N8k1-cb-seed42"}
    ffn = compose_config("train", ["logger=wandb", "model=ffn"], tmp_path)
    assert _loggers(ffn, resumed_wandb_id=None)[0]._wandb_init["name"] == "ffn-cb-seed42"


@pytest.mark.slow  # a train.py process: W&B online without a key must not start a service in this one
def test_wandb_online_without_an_api_key_is_a_configuration_error(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("WANDB_MODE", "WANDB_API_KEY", "NETRC")}
    env |= {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(PROJECT / "train.py"), *TINY, "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "invalid configuration: logger=wandb: No API key configured" in output
    assert "WANDB_MODE=offline" in output and "Traceback" not in output


def test_routing_stats_are_written_once_per_logged_step_with_each_loads_extremes():
    """Under gradient accumulation a step runs several forwards: the first one's statistics are written."""
    written = []
    logger = SimpleNamespace(log_metrics=lambda metrics, step: written.append((step, metrics)))
    trainer = SimpleNamespace(global_step=0, loggers=[logger], is_global_zero=True)
    layer = SimpleNamespace(routing_stats={"load": torch.tensor([0.5, 0.2, 0.3]), "tokens": torch.tensor(10.0)})
    module = SimpleNamespace(net=SimpleNamespace(moe_names=["layer0"], moe=[layer]))
    callback = RoutingStatsLogger(every_n_steps=2)
    for step in (0, 0, 1, 1, 2, 2):  # two micro-batches per step
        trainer.global_step = step
        callback.on_before_backward(trainer, module, torch.tensor(1.0))
    expected = {"moe/layer0/load_max": 0.5, "moe/layer0/load_min": 0.2, "moe/layer0/tokens": 10.0}
    assert [step for step, _ in written] == [0, 2] and written[0][1] == pytest.approx(expected)
