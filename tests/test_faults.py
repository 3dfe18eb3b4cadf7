"""Faults lose nothing: atomic checkpoints, a step-level checkpoint frequency, a SIGKILLed run
resumed to the same weights, metrics and W&B run, a diverging run stopped with its routing
statistics, and no secret written anywhere."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import QUIET, SavedSteps, compose_config, train_cli

from hypermoe.callbacks.nonfinite_loss import NonFiniteLossGuard
from hypermoe.checkpointing import AtomicCheckpointIO, LastCheckpoint
from hypermoe.errors import NonFiniteLossError
from hypermoe.train import run

PROJECT = Path(__file__).resolve().parents[1]
TINY = ["experiment=synthetic_tiny", "model=hypermoe", *QUIET, "trainer.deterministic=true"]
STEPS_PER_EPOCH = 32  # 512 synthetic examples in batches of 16


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_DIR": str(tmp_path), **extra}


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    with pytest.raises(Exception, match="pickle"):  # fails half-way through writing
        io.save_checkpoint({"step": torch.tensor(2), "unpicklable": lambda: None}, path)
    assert _checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


_SAVE_FOREVER = """
import sys, torch
from hypermoe.callbacks.nonfinite_loss import NonFiniteLossGuard
from hypermoe.checkpointing import AtomicCheckpointIO, LastCheckpoint
io, step = AtomicCheckpointIO(), 0
while True:
    step += 1
    io.save_checkpoint({"step": step, "weights": torch.full((8_000_000,), float(step))}, sys.argv[1])
"""


def test_sigkill_while_saving_never_leaves_a_corrupt_checkpoint(tmp_path):
    """A process that does nothing but save 32 MB checkpoints, killed at several moments: the file
    is always one whole checkpoint."""
    path = tmp_path / "last.ckpt"
    for delay in (0.05, 0.13, 0.29):
        saver = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, str(path)], cwd=PROJECT)
        while not path.exists():
            time.sleep(0.01)
        time.sleep(delay)
        saver.send_signal(signal.SIGKILL)
        saver.wait()
        saved = _checkpoint(path)
        assert torch.all(saved["weights"] == saved["step"])


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        # every 4 steps of a 12-step epoch; the epoch's last step is saved once, after its validation
        (["trainer.max_epochs=2", "+trainer.limit_train_batches=12", "checkpoint_every_n_steps=4"],
         [(4, False), (8, False), (12, True), (16, True), (20, True), (24, True)]),
        # gradient accumulation: saved after an optimizer step, never half-way through an accumulation
        (["trainer.max_epochs=1", "+trainer.limit_train_batches=10", "+trainer.accumulate_grad_batches=2",
          "checkpoint_every_n_steps=2"], [(2, False), (4, False), (5, True)]),
    ],
    ids=["steps-and-epochs", "accumulation"],
)  # fmt: skip
def test_last_checkpoint_every_n_steps_and_after_each_epoch(tmp_path, settings, expected):
    SavedSteps.saved.clear()
    record = ["+callbacks.saved._target_=helpers.SavedSteps", "~callbacks.model_checkpoint"]  # last.ckpt only
    run(compose_config("train", [*TINY, *settings, *record], tmp_path))
    assert SavedSteps.saved == expected
    assert _checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == expected[-1][0]
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]


def test_weights_that_are_not_finite_are_not_saved_over_the_last_good_checkpoint(tmp_path):
    saved = []
    trainer = SimpleNamespace(fast_dev_run=False, sanity_checking=False, global_step=7)
    trainer.save_checkpoint = lambda path, weights_only: saved.append(path)
    module, checkpoint = torch.nn.Linear(2, 2), LastCheckpoint(str(tmp_path))
    checkpoint.on_train_epoch_end(trainer, module)
    assert saved == [tmp_path / "last.ckpt"]
    with torch.no_grad():
        module.weight[0, 0] = float("nan")
    with pytest.warns(UserWarning, match=r"not saving step 7: 1 parameters are not finite \(weight, "):
        checkpoint.on_train_epoch_end(trainer, module)
    assert len(saved) == 1


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), float("-inf")])
def test_every_loss_that_is_not_finite_stops_the_step(monkeypatch, loss):
    monkeypatch.setattr("hypermoe.callbacks.nonfinite_loss._report", lambda trainer, module: "the report")
    guard = NonFiniteLossGuard()
    guard.on_before_backward(None, None, torch.tensor(1e30))  # large, but a number
    with pytest.raises(NonFiniteLossError, match="the report"):
        guard.on_before_backward(None, None, torch.tensor(loss))


def test_a_nan_loss_stops_the_run_naming_the_step_and_the_routing(tmp_path):
    poison = ["+callbacks.poison._target_=helpers.PoisonRouterAt", "+callbacks.poison.step=3"]
    cfg = compose_config("train", [*TINY, "trainer.max_epochs=1", "checkpoint_every_n_steps=1", *poison], tmp_path)
    with pytest.raises(NonFiniteLossError) as stopped:
        run(cfg)
    message = str(stopped.value)
    assert message.startswith("train/loss is nan at step 3 (epoch 0)")
    assert "layer0: load=max" in message and "router_logit_max_abs=nan" in message
    assert "layer1: " in message and "dead_experts=" in message  # every MoE layer is reported
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"The last good checkpoint is {last}" in message
    kept = _checkpoint(last)
    assert kept["global_step"] == 3  # saved after step 3's update, before the poisoned forward
    weights = {name: value for name, value in kept["state_dict"].items() if name.startswith("net.")}
    assert weights and all(torch.isfinite(value).all() for value in weights.values())


@pytest.mark.slow
def test_a_nan_loss_ends_the_command_with_its_message_and_exit_4(tmp_path):
    poison = ["+callbacks.poison._target_=helpers.PoisonRouterAt", "+callbacks.poison.step=2"]
    result = train_cli(tmp_path, *TINY, "trainer.max_epochs=1", "checkpoint_every_n_steps=1", *poison)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert "training diverged: train/loss is nan at step 2 (epoch 0)" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_saves_that_step_exits_143_and_resumes_to_the_same_weights(tmp_path):
    folders = {name: tmp_path / name for name in ("stopped", "resumed", "straight")}
    for folder in folders.values():
        folder.mkdir()
    sigterm = ["+callbacks.sigterm._target_=helpers.SigtermAtStep", "+callbacks.sigterm.step=5"]
    # no periodic checkpoint inside the epoch: a last.ckpt there is the one the SIGTERM saved
    stopped = train_cli(folders["stopped"], *TINY, "trainer.max_epochs=1", "checkpoint_every_n_steps=0", *sigterm)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 143, output[-3000:]  # 128 + SIGTERM, not 0
    last = folders["stopped"] / "checkpoints" / "last.ckpt"
    assert _checkpoint(last)["global_step"] == 6  # Lightning stops after the step the signal came in
    assert "SIGTERM at step 6 (epoch 0): the run stopped before it finished" in output
    assert f"Resume with ckpt_path={last}" in output and not (folders["stopped"] / "metrics.json").exists()

    resumed = train_cli(folders["resumed"], *TINY, "trainer.max_epochs=1", f"ckpt_path={last}")
    straight = train_cli(folders["straight"], *TINY, "trainer.max_epochs=1")
    for job in (resumed, straight):
        assert job.returncode == 0, job.stderr[-3000:]
    metrics, expected = (json.loads((folders[name] / "metrics.json").read_text()) for name in ("resumed", "straight"))
    assert metrics["steps"] == expected["steps"] == STEPS_PER_EPOCH
    assert metrics["final"] == expected["final"] and metrics["best"] == expected["best"]
    a, b = _checkpoint(folders["straight"] / "checkpoints" / "last.ckpt"), _checkpoint(last)  # resumed: saved there
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=0, atol=0, msg=name)


def test_a_failed_run_marks_its_wandb_run_failed(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_API_KEY": ""}.items():
        monkeypatch.setenv(name, value)
    finish, exit_codes = wandb.finish, []
    monkeypatch.setattr(wandb, "finish", lambda exit_code=None: (exit_codes.append(exit_code), finish(exit_code)))
    poison = ["+callbacks.poison._target_=helpers.PoisonRouterAt", "+callbacks.poison.step=2"]
    try:
        with pytest.raises(NonFiniteLossError):
            run(compose_config("train", [*TINY, "logger=wandb", "trainer.max_epochs=1", *poison], tmp_path))
    finally:  # wandb.init started a service and put its address in WANDB_SERVICE: later train.py must not share it
        wandb.teardown()
        os.environ.pop("WANDB_SERVICE", None)
    assert exit_codes == [1]  # not 0: W&B would list the run as finished


def _train(output: Path, *overrides: str, env: dict) -> subprocess.Popen:
    command = [sys.executable, "train.py", *TINY, "logger=wandb", f"hydra.run.dir={output}", *overrides]
    return subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_metrics_and_wandb_run(tmp_path):
    # one thread each: the processes run side by side on a busy machine, where a threaded BLAS may
    # split its sums differently from one process to the next, and the comparison is exact
    env = _env(tmp_path, WANDB_MODE="offline", WANDB_API_KEY="", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # the uninterrupted run in a process like the others: torch settings left by other tests
    # (thread counts) would change the last bits
    straight = _train(tmp_path / "straight", "trainer.max_epochs=2", env=env)
    killed = _train(tmp_path / "killed", "trainer.max_epochs=2", "checkpoint_every_n_steps=3", env=env)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    step = 0
    while step <= STEPS_PER_EPOCH:  # until a checkpoint inside the second (last) epoch
        assert killed.poll() is None, f"finished before it could be killed: {killed.stderr.read()[-2000:]}"
        time.sleep(0.02)
        step = _checkpoint(last)["global_step"] if last.exists() else 0
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    step = _checkpoint(last)["global_step"]
    assert STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH  # mid-epoch
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = _train(tmp_path / "resumed", "trainer.max_epochs=2", f"ckpt_path={last}", env=env)
    for job in (straight, resumed):
        assert job.wait(timeout=600) == 0, job.stderr.read()[-3000:]
    metrics, expected = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("resumed", "straight"))
    assert metrics["steps"] == expected["steps"] == 2 * STEPS_PER_EPOCH
    assert metrics["final"] == expected["final"] and metrics["best"] == expected["best"]
    a, b = _checkpoint(tmp_path / "straight/checkpoints/last.ckpt"), _checkpoint(last)
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=0, atol=0, msg=name)
    # the resumed process logged into the W&B run the killed one started
    runs = {path.name.rsplit("-", 1)[-1] for folder in ("killed", "resumed")
            for path in (tmp_path / folder / "wandb").glob("offline-run-*")}  # fmt: skip
    assert len(runs) == 1 and _checkpoint(last)["hypermoe"]["wandb_id"] in runs


@pytest.mark.slow
def test_no_secret_is_written_into_configs_logs_checkpoints_or_metrics(tmp_path):
    secrets = {"WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567", "HF_TOKEN": "hf_SecretTokenValue0123456789"}
    env = _env(tmp_path, WANDB_MODE="offline", **secrets)
    job = _train(tmp_path / "run", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", env=env)
    assert job.wait(timeout=600) == 0, job.stderr.read()[-3000:]
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "last.ckpt" for path in files) and any(path.name == "metrics.json" for path in files)
    for path in files:
        content = path.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in content, f"{name} written into {path}"


def test_no_code_from_the_hub_is_trusted():
    sources = [path.read_text() for path in (PROJECT / "hypermoe").rglob("*.py")]
    assert not any("trust_remote_code" in text for text in sources)
