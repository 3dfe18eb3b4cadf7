"""In a multirun a failed job (an exception, a killed process) does not stop the other jobs; the sweep
logs each failure as it happens, tables them after the batch, lists them in ``<sweep dir>/failures.yaml``
and exits with code 1 (hydra_plugins/hypermoe_launcher). Every test runs a real sweep in a subprocess:
train.py, or tests/apps/job_app.py, whose jobs return, raise or SIGKILL themselves as told."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CONF
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hydra_plugins.hypermoe_launcher._report import Failure, FailureReport
from hypermoe.errors import ConfigError

ROOT = CONF.parent
APP = Path(__file__).parent / "apps" / "job_app.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
# a short quiet train.py job: tiny random BERT, generated task, 2 batches, no logger, checkpoint or progress bar
TRAIN = ["experiment=synthetic_tiny", "model=topk", "logger=none", "~callbacks", "+trainer.enable_progress_bar=false",
         "+trainer.enable_checkpointing=false", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
         "+trainer.limit_val_batches=2"]  # fmt: skip
TOP_K_ERROR = "top_k=9 must be <= num_experts=8"  # TopKMoE's check; model.top_k=9 fails before any compute


def _multirun(script: Path | str, args: list[str], sweep: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), "-m", *args, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _failures(sweep: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(sweep / "failures.yaml"))


def _launched(stdout: str, job: int) -> list[str]:
    """The overrides the launcher logged for ``job`` (as the sweeper spelt them)."""
    return re.search(rf"\t#{job} : (.*)$", stdout, re.MULTILINE).group(1).split(" ")


@pytest.mark.slow
def test_sigterm_to_the_sweep_stops_it_after_the_job_it_interrupted(tmp_path):
    sweep = tmp_path / "sweep"
    sigterm = ["+callbacks.sigterm._target_=helpers.SigtermAtStep", "+callbacks.sigterm.step=1"]
    result = subprocess.run(
        [sys.executable, "train.py", "-m", *TRAIN, *sigterm, "seed=1,2", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env={**ENV, "PYTHONPATH": str(Path(__file__).parent)}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 143, result.stderr[-3000:]  # 128 + SIGTERM, as a process killed by it
    assert not (sweep / "1").exists()  # the second job never started
    (failure,) = _failures(sweep)["failures"]
    assert (failure["job"], failure["type"]) == (0, "JobTerminatedError") and "SIGTERM" in failure["message"]
    assert "SIGTERM during job #0: the sweep stops" in result.stdout + result.stderr


@pytest.mark.slow
def test_default_launcher_runs_every_job_and_lists_the_failed_one(tmp_path):
    sweep = tmp_path / "sweep"
    # the failing job first; ablation=topk (the model TRAIN names) is there for metrics.json to record
    result = _multirun("train.py", [*TRAIN, "ablation=topk", "model.top_k=9,1"], sweep)
    assert result.returncode == 1, result.stderr[-3000:]
    # the job after the failed one ran to the end
    metrics = json.loads((sweep / "1" / "metrics.json").read_text())
    assert metrics["model_config"]["top_k"] == 1 and not (sweep / "0" / "metrics.json").exists()
    assert metrics["ablation"] == "topk"  # the conf/ablation row, from the Hydra app's choices
    (failure,) = _failures(sweep)["failures"]
    # the layer's ValueError, or run()'s ConfigError naming the config section around it
    assert failure["type"] in {"ValueError", "ConfigError"} and failure["message"].endswith(TOP_K_ERROR)
    assert _failures(sweep) == {"jobs": 2, "failed": 1, "failures": [
        {"job": 0, "overrides": _launched(result.stdout, 0), "type": failure["type"], "message": failure["message"],
         "dir": str(sweep / "0")}]}  # fmt: skip
    error = f"{failure['type']}: {failure['message']}"
    # logged when the job failed, before the next job started, also in the job's own log; a configuration
    # error's message says it all, as a single run prints it alone: no traceback
    assert result.stdout.index(f"Job #0 failed: {error}") < result.stdout.index("\t#1 : ")
    job_log = (sweep / "0" / "train.log").read_text()
    assert f"Job #0 failed: {error}" in job_log and "Traceback" not in job_log + result.stdout
    # the table after the batch: the overrides that differ between jobs, the error, the folder
    assert re.search(rf"^  #0 +model\.top_k=9 +{re.escape(error)} +{sweep / '0'}$", result.stdout, re.MULTILINE)
    # the last words: the first failure, how many failed, and where they are listed
    last_words = f"Job #0 failed: {error}\n1 of 2 jobs failed; they are listed in {sweep / 'failures.yaml'}\n"
    assert last_words in result.stderr


@pytest.mark.parametrize("max_parallel", [1, 3])
def test_isolated_launcher_survives_a_job_killed_by_sigkill(tmp_path, max_parallel):
    sweep = tmp_path / "sweep"
    args = ["hydra/launcher=isolated", f"hydra.launcher.max_parallel={max_parallel}", "action=return,kill,return"]
    result = _multirun(APP, args, sweep, timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    assert [(sweep / str(job) / "done.txt").is_file() for job in range(3)] == [True, False, True]
    failures = _failures(sweep)
    failures["failures"][0].pop("output", None)  # whatever the job printed before it was killed
    assert failures == {"jobs": 3, "failed": 1, "failures": [
        {"job": 1, "overrides": ["action=kill"], "type": "JobKilledError", "message": "killed by SIGKILL",
         "dir": str(sweep / "1")}]}  # fmt: skip
    assert re.search(r"Job #2 completed in \d+ s, returning 1\.0$", result.stdout, re.MULTILINE)
    assert re.search(rf"^  #1 +action=kill +JobKilledError: killed by SIGKILL +{sweep / '1'}$", result.stdout, re.M)
    assert (
        "Job #1 failed: JobKilledError: killed by SIGKILL\n"
        f"1 of 3 jobs failed; they are listed in {sweep / 'failures.yaml'}\n"
    ) in result.stderr
    # each job's process was a single run that looks like a multirun job: its folder, number and overrides
    job = OmegaConf.load(sweep / "2" / ".hydra" / "hydra.yaml").hydra
    assert (job.job.num, job.job.id, job.sweep.dir, job.runtime.output_dir) == (2, "2", str(sweep), str(sweep / "2"))
    assert list(OmegaConf.load(sweep / "2" / ".hydra" / "overrides.yaml")) == ["action=return"]


def test_sigterm_to_an_isolated_sweep_stops_its_running_job_and_starts_no_more(tmp_path):
    """The job's process must not outlive the sweep's: it gets the SIGTERM too, and stops as it would."""
    sweep = tmp_path / "sweep"
    result = _multirun(APP, ["hydra/launcher=isolated", "action=sigterm_sweep,return"], sweep, timeout=120)
    assert result.returncode == 143, result.stderr[-3000:]
    assert (sweep / "0" / "stopped.txt").is_file() and not (sweep / "1").exists()
    (failure,) = _failures(sweep)["failures"]
    assert (failure["job"], failure["type"], failure["message"]) == (0, "JobExitError", "exit code 143")
    assert "SIGTERM: the sweep stops; its running jobs were stopped, jobs not started: #1" in result.stdout


def test_the_callback_alone_records_failures_with_hydras_basic_launcher(tmp_path):
    """hydra.callbacks.failed_jobs does the recording: with Hydra's own launcher, only the table and the
    compact last words of hydra/launcher=inprocess are missing."""
    sweep = tmp_path / "sweep"
    result = _multirun(APP, ["hydra/launcher=basic", "action=raise,return"], sweep, timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    assert (sweep / "1" / "done.txt").is_file()
    assert _failures(sweep) == {"jobs": 2, "failed": 1, "failures": [
        {"job": 0, "overrides": ["action=raise"], "type": "ValueError", "message": "job asked to fail (value=1.0)",
         "dir": str(sweep / "0")}]}  # fmt: skip
    assert result.stdout.index("Job #0 failed: ValueError: job asked to fail") < result.stdout.index("\t#1 : ")


def test_in_process_a_killed_job_ends_the_whole_sweep(tmp_path):
    """Why hydra/launcher=isolated exists: in-process, the job's SIGKILL is the sweep's."""
    sweep = tmp_path / "sweep"
    result = _multirun(APP, ["hydra/launcher=inprocess", "action=return,kill,return"], sweep, timeout=120)
    assert result.returncode == -9
    assert [(sweep / str(job) / "done.txt").is_file() for job in range(3)] == [True, False, False]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["inprocess", "isolated"])
def test_optuna_gets_the_return_values_and_carries_on_past_failed_trials(tmp_path, launcher):
    """The sweeper optimises what the jobs return (through a process boundary with the isolated launcher);
    with max_failure_rate=1 it tells failed trials as FAIL and goes on, and the sweep still exits 1."""
    sweep = tmp_path / "sweep"
    args = [f"hydra/launcher={launcher}", "hydra/sweeper=optuna", "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=7", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.direction=maximize", "hydra.sweeper.max_failure_rate=1.0",
            "action=choice(return,raise)", "value=interval(0,10)"]  # fmt: skip
    result = _multirun(APP, args, sweep, timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    returned = {job: float(path.read_text()) for job in range(6) if (path := sweep / str(job) / "done.txt").is_file()}
    failed = sorted(set(range(6)) - set(returned))
    assert returned and failed, "the seed should sample both actions"
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_value == max(returned.values())
    failures = _failures(sweep)
    assert (failures["jobs"], failures["failed"], [f["job"] for f in failures["failures"]]) == (6, len(failed), failed)
    for failure in failures["failures"]:
        value = dict(o.split("=") for o in failure["overrides"])["value"]
        assert (failure["type"], failure["message"]) == ("ValueError", f"job asked to fail (value={value})")
    # the sweep's last words, after all trials: how many failed, where, and each one
    lines = [f"  #{f['job']}  ValueError: {f['message']}  ({f['dir']})" for f in failures["failures"]]
    summary = [f"{len(failed)} of 6 jobs failed; they are listed in {sweep / 'failures.yaml'}:", *lines]
    assert result.stderr.rstrip().splitlines()[-len(summary) :] == summary


@pytest.mark.parametrize("action", ["raise", "choice(return,raise)"])
def test_the_projects_optuna_sweeper_ends_a_search_without_a_completed_trial_with_the_failures(tmp_path, action):
    """Optuna's own asks its study for the best trial at the end, which raises when no trial completed;
    hparams_search=hypermoe_optuna uses this one. With some completed trials it is Optuna's."""
    sweep = tmp_path / "sweep"
    args = ["hydra/sweeper=optuna", "hydra.sweeper._target_=hydra_plugins.hypermoe_launcher.sweepers.OptunaSweeper",
            "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=7", "hydra.sweeper.n_trials=4",
            "hydra.sweeper.max_failure_rate=1.0", f"action={action}", "value=interval(0,10)"]  # fmt: skip
    result = _multirun(APP, args, sweep, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    failures = _failures(sweep)
    if action == "raise":
        assert failures["failed"] == failures["jobs"] == 4
        assert "No trial of the search completed, so it has no best parameters." in result.stdout + result.stderr
        assert f"4 of 4 jobs failed; they are listed in {sweep / 'failures.yaml'}:" in result.stderr
        assert not (sweep / "optimization_results.yaml").exists()
    else:
        assert 0 < failures["failed"] < 4 and (sweep / "optimization_results.yaml").is_file()


def test_a_search_kept_in_a_storage_runs_only_its_remaining_trials_when_started_again(tmp_path):
    """A search stopped after 3 of its 5 trials (here: asked for 3) and started again runs 2 more,
    not 5, and its seeded random sampler does not draw the first start's settings again."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["hydra/sweeper=optuna", "hydra.sweeper._target_=hydra_plugins.hypermoe_launcher.sweepers.OptunaSweeper",
            "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=7", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=kept", "hydra.sweeper.direction=maximize", "action=return",
            "value=interval(0,10)"]  # fmt: skip

    def values(sweep: Path) -> list[float]:
        return [float(path.read_text()) for path in sorted(sweep.glob("*/done.txt"))]

    for sweep, n_trials in [(tmp_path / "first", 3), (tmp_path / "again", 5)]:
        result = _multirun(APP, [*args, f"hydra.sweeper.n_trials={n_trials}"], sweep)
        assert result.returncode == 0, result.stderr[-3000:]
    assert len(values(tmp_path / "first")) == 3 and len(values(tmp_path / "again")) == 2
    assert not set(values(tmp_path / "first")) & set(values(tmp_path / "again"))
    best = max(values(tmp_path / "first") + values(tmp_path / "again"))
    assert OmegaConf.load(tmp_path / "again" / "optimization_results.yaml").best_value == best  # over all five


def test_a_stored_search_whose_trials_all_failed_runs_them_again_when_started_again(tmp_path):
    """Failed trials (the bug since fixed, out of memory) do not use up n_trials."""
    args = ["hydra/sweeper=optuna", "hydra.sweeper._target_=hydra_plugins.hypermoe_launcher.sweepers.OptunaSweeper",
            "hydra/sweeper/sampler=random", f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",
            "hydra.sweeper.study_name=kept", "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.n_trials=2",
            "value=interval(0,10)"]  # fmt: skip
    assert _multirun(APP, [*args, "action=raise"], tmp_path / "failed").returncode == 1
    result = _multirun(APP, [*args, "action=return"], tmp_path / "fixed")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "fixed").glob("*/done.txt"))) == 2


@pytest.mark.slow  # two train.py processes, each importing torch and Lightning: 60-100 s on 2 busy cores
def test_isolated_launcher_on_train_py(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*TRAIN, "hydra/launcher=isolated", "hydra.launcher.max_parallel=2", "model.top_k=9,1"]
    result = _multirun("train.py", args, sweep)
    assert result.returncode == 1, result.stderr[-3000:]
    metrics = json.loads((sweep / "1" / "metrics.json").read_text())
    best = metrics["best"][metrics["main_metric"]]
    # what train.py's main() returned, as the sweeper got it
    returned = json.loads((sweep / "1" / ".hydra" / "job_return.json").read_text())
    assert returned == {"status": "COMPLETED", "return_value": best}
    assert re.search(rf"Job #1 completed in \d+ s, returning {best!r}$", result.stdout, re.MULTILINE)
    (failure,) = _failures(sweep)["failures"]
    # the job's exception as it reported it, or (a ConfigError in a single run) its exit code and last words
    assert (failure["job"], failure["overrides"], failure["dir"]) == (0, _launched(result.stdout, 0), str(sweep / "0"))
    assert failure["type"] in {"ValueError", "JobExitError"} and failure["message"].endswith(TOP_K_ERROR)
    assert f"1 of 2 jobs failed; they are listed in {sweep / 'failures.yaml'}\n" in result.stderr


def test_the_launchers_compose_with_the_project_configs():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        default = compose("train", return_hydra_config=True).hydra
        isolated = compose("train", ["hydra/launcher=isolated"], return_hydra_config=True).hydra
        search = compose("train", ["hparams_search=hypermoe_optuna"], return_hydra_config=True).hydra
    assert default.launcher._target_.endswith("InProcessLauncher") and "failed_jobs" in default.callbacks
    assert (isolated.launcher._target_.rsplit(".", 1)[1], isolated.launcher.max_parallel) == ("IsolatedLauncher", 1)
    assert search.launcher._target_.endswith("InProcessLauncher") and search.sweeper.max_failure_rate == 1.0


@pytest.mark.parametrize("error, traced", [(ConfigError("model.top_k=9 ..."), False), (RuntimeError("a bug"), True)])
def test_a_failed_jobs_traceback_is_logged_only_for_an_unexpected_error(tmp_path, caplog, error, traced):
    report = FailureReport(tmp_path)
    failure = Failure(0, ["model.top_k=9"], type(error).__name__, str(error), str(tmp_path / "0"))
    with caplog.at_level("ERROR"):
        report.job_ended(failure.overrides, failure, error)
    (record,) = caplog.records
    assert record.getMessage().startswith(f"Job #0 failed: {type(error).__name__}: {error}")
    assert (record.exc_info is not None) is traced
