"""W&B logging offline: one run per job, finished, and resumed into the same run."""

import os

import pytest
from helpers import compose_config

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


def test_a_failing_job_still_finishes_its_wandb_run(tmp_path, wandb_offline):
    import wandb

    failing = [*TINY, "logger=wandb", "trainer.accelerator=gpu"]  # no GPU here: the Trainer fails
    with pytest.raises(Exception, match="gpu"):
        run(compose_config("train", failing, tmp_path))
    assert wandb.run is None
