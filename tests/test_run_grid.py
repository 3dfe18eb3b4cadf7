"""experiments/run_grid.py: a table's grid as Hydra expands it, and only the jobs without a result."""

import ast
import os
import re
import runpy
import subprocess
import sys

import pytest
import yaml
from helpers import PROJECT

sys.path.insert(0, str(PROJECT / "experiments"))
from run_grid import finished_jobs, grid_of, job_name, jobs_of, main, run_job, select_jobs

from hypermoe.job_processes import ForwardSigterm


def test_grid_is_the_tables_sweep_expanded():
    grid = grid_of("char_lm_cpu")
    assert grid == {
        "data.task": ["shakespeare_char"],
        "model": ["ffn", "topk", "dense_moe", "hypermoe", "topk_adapter"],
        "seed": ["1", "2", "3", "4", "5"],
    }
    jobs = jobs_of(grid)
    assert len(jobs) == 25 and len(set(jobs)) == 25
    assert jobs[0] == (("data.task", "shakespeare_char"), ("model", "ffn"), ("seed", "1"))
    assert [dict(job)["seed"] for job in jobs[:6]] == ["1"] * 5 + ["2"]  # every variant once before seed 2
    assert job_name(jobs[0]) == "task-shakespeare_char_model-ffn_seed-1"


def _run(folder, overrides: list[str], finished: bool) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if finished:
        (folder / "metrics.json").write_text("{}")


def test_a_job_is_done_only_with_a_metrics_json_of_the_same_values_and_settings(tmp_path):
    grid = {"model": ["topk", "hypermoe"], "seed": ["1", "2"]}
    _run(tmp_path / "a" / "0", ["model=topk", "seed=1", "table=t", "paths.data_dir=/data"], finished=True)
    _run(tmp_path / "a" / "1", ["model=topk", "seed=2"], finished=False)  # killed: no metrics.json
    _run(tmp_path / "b" / "0", ["model=hypermoe", "seed=2", "keep_checkpoints=true"], finished=True)
    _run(tmp_path / "c" / "0", ["model=hypermoe"], finished=True)  # not a job of this grid
    _run(tmp_path / "d" / "0", ["model=hypermoe", "seed=1", "trainer.max_steps=4"], finished=True)  # a trial
    done = finished_jobs(tmp_path, grid)
    assert done == {(("model", "topk"), ("seed", "1")), (("model", "hypermoe"), ("seed", "2"))}
    assert [job for job in jobs_of(grid) if job not in done] == [
        (("model", "hypermoe"), ("seed", "1")),
        (("model", "topk"), ("seed", "2")),
    ]
    assert finished_jobs(tmp_path, grid, ["trainer.max_steps=4"]) == {(("model", "hypermoe"), ("seed", "1"))}


def test_the_settings_after_the_double_dash_are_compared_as_hydra_records_them(tmp_path):
    """A multirun job's overrides.yaml holds each override as the sweeper renders it again."""
    grid = {"model": ["topk"], "seed": ["1"]}
    _run(tmp_path / "a" / "0", ["model=topk", "seed=1", "optimizer.lr=0.001", "~callbacks.progress_bar=null"], True)
    typed = ["optimizer.lr=1e-3", "~callbacks.progress_bar", "hydra/job_logging=disabled"]
    assert finished_jobs(tmp_path, grid, typed) == {(("model", "topk"), ("seed", "1"))}


def test_a_misspelt_key_after_the_double_dash_is_refused_before_any_job(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["char_lm_cpu", "--dry-run", "--log-dir", str(tmp_path), "--", "trainer.max_stepz=2"])
    error = capsys.readouterr().err
    assert "the grid's job data.task=shakespeare_char model=ffn seed=1 trainer.max_stepz=2 does not compose" in error
    assert "Could not override 'trainer.max_stepz'" in error


def test_an_override_that_does_not_parse_after_the_double_dash_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["char_lm_cpu", "--dry-run", "--log-dir", str(tmp_path), "--", "trainer.max_epochs=[1"])
    assert "after --: " in capsys.readouterr().err


def test_a_grid_key_after_the_double_dash_is_refused(tmp_path, capsys):
    """It would replace every job's own value under the job's name: five runs of seed 1 named seed 1-5."""
    with pytest.raises(SystemExit):
        main(["char_lm_cpu", "--dry-run", "--log-dir", str(tmp_path), "--", "seed=1"])
    assert "seed=1 after --: seed is a key of the grid; choose with --only" in capsys.readouterr().err


def test_runs_with_other_settings_are_named_and_not_counted(tmp_path, capsys):
    runs = tmp_path / "table" / "char_lm_cpu"
    _run(runs / "s" / "0", ["data.task=shakespeare_char", "model=ffn", "seed=1", "trainer.max_steps=4"], True)
    main(["char_lm_cpu", "--dry-run", "--log-dir", str(tmp_path), "--only", "model=ffn", "--only", "seed=1"])
    out = capsys.readouterr().out
    assert "1 jobs chosen in the grid, 0 done, 1 to run" in out
    assert "1 finished run(s) with other settings do not count, e.g. ['trainer.max_steps=4']" in out
    main(["char_lm_cpu", "--dry-run", "--log-dir", str(tmp_path), "--only", "model=ffn", "--only", "seed=1",
          "--", "trainer.max_steps=4"])  # fmt: skip
    assert "1 jobs chosen in the grid, 1 done, 0 to run" in capsys.readouterr().out


def test_only_selects_part_of_the_grid_in_its_order(capsys):
    grid = grid_of("char_lm_cpu")
    jobs = select_jobs(jobs_of(grid), grid, ["model=hypermoe,ffn", "seed=2"])
    assert [(dict(job)["model"], dict(job)["seed"]) for job in jobs] == [("ffn", "2"), ("hypermoe", "2")]
    twice = select_jobs(jobs_of(grid), grid, ["model=ffn", "seed=1", "seed=2"])  # a key given twice: both
    assert [dict(job)["seed"] for job in twice] == ["1", "2"]
    with pytest.raises(ValueError, match=r"--only model=switch: \['switch'\] not among model's values"):
        select_jobs(jobs_of(grid), grid, ["model=switch"])
    with pytest.raises(ValueError, match="--only top_k=1: 'top_k' is not a key of the grid"):
        select_jobs(jobs_of(grid), grid, ["top_k=1"])
    with pytest.raises(SystemExit):
        main(["char_lm_cpu", "--dry-run", "--only", "seed=9"])
    assert "--only seed=9: ['9'] not among seed's values" in capsys.readouterr().err


@pytest.mark.slow  # one char_lm_cpu job, stopped at its first step
def test_sigterm_to_the_grid_stops_its_running_job_resumably_and_starts_no_more(tmp_path, data_root, capsys):
    """The job's process must not outlive the grid's (a rerun would start the same job beside it)."""
    env = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(PROJECT / "tests")}
    sigterm = ["+callbacks.sigterm._target_=helpers.SigtermParentAtStep", "+callbacks.sigterm.step=1"]
    command = [sys.executable, str(PROJECT / "experiments" / "run_grid.py"), "char_lm_cpu", "--log-dir", str(tmp_path),
               "--only", "model=ffn", "--only", "seed=1,2", "--", *sigterm]  # fmt: skip
    result = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 143, result.stdout + result.stderr[-3000:]
    assert re.search(r"model-ffn_seed-1: exit 143 after", result.stdout)
    assert "stopped by SIGTERM, 1 jobs not started" in result.stdout
    (job,) = (tmp_path / "table" / "char_lm_cpu").iterdir()  # seed 2 never started
    assert (job / "0" / "checkpoints" / "last.ckpt").is_file()  # stopped as a job stops on SIGTERM: resumably


def test_a_grid_with_a_failed_job_runs_the_rest_and_exits_1(tmp_path, monkeypatch, capsys):
    import run_grid

    ran = []
    monkeypatch.setattr(run_grid, "run_job", lambda table, job, *rest: ran.append(job) or int(("seed", "1") in job))
    only = ["--only", "model=ffn", "--only", "seed=1,2"]
    assert main(["char_lm_cpu", "--log-dir", str(tmp_path), *only]) == 1
    assert len(ran) == 2 and "char_lm_cpu: 1 jobs finished, 1 failed" in capsys.readouterr().out


def test_a_failed_job_is_reported_with_its_last_words_and_its_log(tmp_path, capsys):
    job = (("model", "ffn"), ("seed", "1"))
    with ForwardSigterm() as stop:
        assert run_job("char_lm_cpu", job, 0, tmp_path, ["trainer.max_epochs=0"], stop) == 1  # a failed sweep job
    log = tmp_path / "table_logs" / "char_lm_cpu" / "model-ffn_seed-1.log"
    why = "ConfigError: trainer.max_epochs=0 must be an integer >= 1, or -1 to let max_steps decide"
    assert re.search(rf"model-ffn_seed-1: exit 1 after \d+ s: {why} \(log: {re.escape(str(log))}\)$",
                     capsys.readouterr().out, re.MULTILINE)  # fmt: skip


@pytest.fixture
def another_checkouts_hypermoe(tmp_path):
    """PYTHONPATH holding a hypermoe that fails to import: found before this checkout's, as another
    checkout's editable install is when a script runs from a frozen worktree with its .venv."""
    (tmp_path / "hypermoe").mkdir()
    (tmp_path / "hypermoe" / "__init__.py").write_text('raise ImportError("another checkout\'s hypermoe")\n')
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def test_a_script_runs_its_own_checkouts_hypermoe(another_checkouts_hypermoe, tmp_path):
    script = PROJECT / "experiments" / "run_grid.py"
    result = subprocess.run(
        [sys.executable, str(script), "char_lm_cpu", "--dry-run", "--log-dir", str(tmp_path / "outputs")],
        env=another_checkouts_hypermoe, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "char_lm_cpu: 25 jobs in the grid, 0 done, 25 to run" in result.stdout


def test_the_processes_a_script_starts_import_its_checkouts_hypermoe(another_checkouts_hypermoe, monkeypatch, tmp_path):
    """bench_train's and paper_dryrun's workers start from a fresh interpreter and import hypermoe there."""
    monkeypatch.setenv("PYTHONPATH", another_checkouts_hypermoe["PYTHONPATH"])
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", [str(PROJECT / "experiments" / "run_grid.py")])  # as that script runs
    runpy.run_path(str(PROJECT / "experiments" / "_this_checkout.py"))
    empty = tmp_path / "empty"  # the child's working folder, which -c puts first on its sys.path
    empty.mkdir()
    code = "import hypermoe; print(hypermoe.__file__)"
    child = subprocess.run([sys.executable, "-c", code], cwd=empty, capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == str(PROJECT / "hypermoe" / "__init__.py"), child.stderr


@pytest.mark.parametrize("script", sorted((PROJECT / "experiments").glob("*.py")), ids=lambda path: path.name)
def test_every_script_that_imports_hypermoe_imports_this_checkouts_first(script):
    imports = [
        node for node in ast.walk(ast.parse(script.read_text())) if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    names = [(node.lineno, alias.name if isinstance(node, ast.Import) else node.module or "") for node in imports
             for alias in node.names]  # fmt: skip
    first_hypermoe = min((line for line, name in names if name.split(".")[0] == "hypermoe"), default=None)
    if first_hypermoe is not None:
        assert any(name == "_this_checkout" and line < first_hypermoe for line, name in names)
