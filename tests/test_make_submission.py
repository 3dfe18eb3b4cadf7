"""experiments/make_submission.py: one table's runs gathered into a leaderboard's submission folder,
zip and manifest; a file no run can give is listed as missing, never filled in."""

import dataclasses
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers import PROJECT, TINY, compose_config

from hypermoe.data.tasks import TASKS
from hypermoe.errors import ConfigError
from hypermoe.train import run

sys.path.insert(0, str(PROJECT / "experiments"))
from make_submission import Run, check_one_configuration, choose_run, main, make_submission, table_runs, wanted_files

GRID = {"data": ["superglue"], "data.task": ["cb", "rte"], "model": ["topk", "hypermoe"], "seed": ["1", "2"]}
GLUE_GRID = {"data": ["glue"], "data.task": ["rte", "mnli"], "model": ["hypermoe"], "seed": ["1"]}
ABLATION_GRID = {
    "data": ["superglue"],
    "data.task": ["cb", "rte"],
    "ablation": ["agg_sum", "agg_mean"],
    "seed": ["1", "2"],
}
SUPERGLUE_FILES = ["BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl", "RTE.jsonl", "WiC.jsonl", "WSC.jsonl",
                   "AX-b.jsonl", "AX-g.jsonl"]  # fmt: skip


def _record(folder: Path, task: str, model: str, seed: int, overrides: list[str]) -> Path:
    """A run's record as a grid leaves it: metrics.json and Hydra's overrides (a run whose
    checkpoints the table deleted leaves nothing else)."""
    (folder / ".hydra").mkdir(parents=True, exist_ok=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    record = {"task": task, "model": model, "seed": seed, "main_metric": "accuracy", "git": "abc123"}
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def test_the_files_each_leaderboard_grades():
    assert [wanted.file for wanted in wanted_files("superglue")] == SUPERGLUE_FILES
    glue = {wanted.file: wanted for wanted in wanted_files("glue")}
    assert list(glue)[:4] == ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv"]
    assert glue["MNLI-m.tsv"].tasks == ("glue/mnli",) and glue["RTE.tsv"].split == "test"
    axb = next(wanted for wanted in wanted_files("superglue") if wanted.file == "AX-b.jsonl")
    assert (axb.split, axb.tasks) == ("ax_b", ("superglue/rte",))


def test_a_task_added_from_another_tasks_files_leaves_the_graded_files_alone(monkeypatch):
    """A researcher's task reading CoLA's folder: without a test split, or with CoLA's, it names no
    new file and takes none from glue/cola."""
    before = wanted_files("glue")
    cola = TASKS["glue"]["cola"]
    monkeypatch.setitem(TASKS["glue"], "cola_dev_only", dataclasses.replace(cola, name="cola_dev_only", files={
        split: name for split, name in cola.files.items() if split != "test"}))  # fmt: skip
    monkeypatch.setitem(TASKS["glue"], "cola_copy", dataclasses.replace(cola, name="cola_copy"))
    assert wanted_files("glue") == before


def test_the_latest_run_that_can_give_the_file_is_chosen(tmp_path):
    old = _record(tmp_path / "sweep1" / "0", "superglue/rte", "hypermoe", 1, ["seed=1"])
    (old / "checkpoints").mkdir()
    (old / "checkpoints" / "last.ckpt").write_bytes(b"")  # only its presence is read here
    newer = _record(tmp_path / "sweep2" / "0", "superglue/rte", "hypermoe", 2, ["seed=2"])  # checkpoint deleted
    _record(tmp_path / "sweep2" / "1", "superglue/rte", "topk", 2, ["seed=2"])  # another variant
    rte, axb = (w for w in wanted_files("superglue") if w.file in ("RTE.jsonl", "AX-b.jsonl"))
    runs = table_runs(tmp_path, GRID, "hypermoe", None)
    assert [r.folder for r in runs] == [old, newer]
    assert choose_run(rte, runs)[0].folder == old
    (newer / "submission" / "test").mkdir(parents=True)
    (newer / "submission" / "test" / "eval_metrics.json").write_text("{}")  # predictions made before
    assert choose_run(rte, runs)[0].folder == newer
    assert choose_run(axb, runs)[0].folder == old  # newer holds no AX-b predictions
    assert choose_run(rte, table_runs(tmp_path, GRID, "hypermoe", 1))[0].folder == old
    wic = next(w for w in wanted_files("superglue") if w.file == "WiC.jsonl")
    assert choose_run(wic, runs) == (None, "no run of superglue/wic")
    shutil.rmtree(old / "checkpoints")
    assert "2 run(s) of superglue/rte kept no checkpoint" in choose_run(axb, runs)[1]


def test_runs_in_two_configurations_are_told_apart_with_only(tmp_path):
    """An ablation table's rows share a variant: the submission names the grid value that differs
    instead of taking whichever row ran last, for a task and across tasks (CB's agg_sum runs and
    RTE's agg_mean would make one mixed submission); seeds and keep_checkpoints may differ."""
    rows = [("cb", "agg_sum", 1, []), ("cb", "agg_sum", 2, ["keep_checkpoints=true"]), ("rte", "agg_mean", 1, [])]
    for number, (task, row, seed, keep) in enumerate(rows):
        overrides = [f"data.task={task}", f"ablation={row}", f"seed={seed}", *keep]
        run = _record(tmp_path / str(number), f"superglue/{task}", "hypermoe", seed, overrides)
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "epoch01.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"differ in \['ablation=agg_mean', 'ablation=agg_sum'\]: .*--only ablation"):
        check_one_configuration(table_runs(tmp_path, ABLATION_GRID, "hypermoe", None), ABLATION_GRID)
    agg_sum = table_runs(tmp_path, ABLATION_GRID, "hypermoe", None, ["ablation=agg_sum"])
    check_one_configuration(agg_sum, ABLATION_GRID)  # CB's two seeds: one configuration
    cb = next(w for w in wanted_files("superglue") if w.file == "CB.jsonl")
    assert choose_run(cb, agg_sum)[0].folder == tmp_path / "1"
    assert table_runs(tmp_path, ABLATION_GRID, "hypermoe", None, ["ablation=agg_all"]) == []


def test_a_trial_run_is_not_submitted_for_the_grids(tmp_path):
    """run_grid counts only runs without settings beyond the grid as the grid's: a 4-step trial of
    the same job is left out, unless --only names its settings (as recorded: 1e-3 is 0.001)."""
    rte = next(w for w in wanted_files("superglue") if w.file == "RTE.jsonl")
    grid_run = ["data.task=rte", "model=hypermoe", "seed=1"]
    for name, extra in [("trial", ["trainer.max_steps=4", "optimizer.lr=0.001"]), ("grid", [])]:
        run = _record(tmp_path / name, "superglue/rte", "hypermoe", 1, [*grid_run, *extra])
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "epoch01.ckpt").write_bytes(b"")
    assert [r.folder.name for r in table_runs(tmp_path, GRID, "hypermoe", None)] == ["grid"]
    trial = table_runs(tmp_path, GRID, "hypermoe", None, ["trainer.max_steps=4", "optimizer.lr=1e-3"])
    assert [r.folder.name for r in trial] == ["trial"] and choose_run(rte, trial)[0].folder.name == "trial"


def test_the_files_no_task_here_predicts_are_listed_missing(tmp_path):
    run = _record(tmp_path / "table" / "superglue_cpu" / "sweep" / "0", "superglue/cb", "hypermoe", 1, ["seed=1"])
    (run / "submission" / "test").mkdir(parents=True)
    (run / "submission" / "test" / "CB.jsonl").write_text('{"idx": 0, "label": "entailment"}\n')
    evaluated = {"ckpt_path": str(run / "checkpoints" / "epoch01.ckpt"), "test": {"rows": 1}}
    (run / "submission" / "test" / "eval_metrics.json").write_text(json.dumps(evaluated))
    manifest = make_submission("superglue_cpu", "hypermoe", None, tmp_path, tmp_path / "out", [])
    assert list(manifest["files"]) == ["CB.jsonl"]
    assert "ReCoRD.jsonl" in manifest["missing"] and len(manifest["missing"]) == len(SUPERGLUE_FILES)


def test_a_file_whose_prediction_fails_is_listed_and_the_others_are_submitted(tmp_path, capsys):
    """The RTE run's checkpoint is no checkpoint (empty): its files' error is recorded, CB's predictions still go
    into the zip, which is named after the whole dotted folder name, and the exit status says so."""
    sweep = tmp_path / "table" / "superglue_cpu" / "sweep"
    cb = _record(sweep / "0", "superglue/cb", "hypermoe", 1, ["seed=1", "data.task=cb"])
    (cb / "submission" / "test").mkdir(parents=True)
    (cb / "submission" / "test" / "CB.jsonl").write_text('{"idx": 0, "label": "entailment"}\n')
    evaluated = {"ckpt_path": str(cb / "checkpoints" / "epoch01.ckpt"), "test": {"rows": 1}}
    (cb / "submission" / "test" / "eval_metrics.json").write_text(json.dumps(evaluated))
    rte = _record(sweep / "1", "superglue/rte", "hypermoe", 1, ["seed=1", "data.task=rte"])
    (rte / "checkpoints").mkdir()
    (rte / "checkpoints" / "epoch01.ckpt").write_bytes(b"")
    out = tmp_path / "submission_v1.0"
    assert main(["superglue_cpu", "--log-dir", str(tmp_path), "--out", str(out)]) == 1
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert list(manifest["files"]) == ["CB.jsonl"]
    assert list(manifest["failed"]) == ["RTE.jsonl", "AX-b.jsonl", "AX-g.jsonl"]  # all three from that run
    assert f"predicting it with {rte} failed: ConfigError: ckpt_path=" in manifest["failed"]["RTE.jsonl"]
    assert "  failed RTE.jsonl: predicting it with " in capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / "submission_v1.0.zip") as archive:
        assert archive.namelist() == ["CB.jsonl"]


def test_glues_diagnostic_comes_from_an_mnli_run_else_from_an_rte_run(tmp_path):
    ax = next(wanted for wanted in wanted_files("glue") if wanted.file == "AX.tsv")
    assert (ax.split, ax.tasks) == ("ax", ("glue/mnli", "glue/rte"))
    for number, task in enumerate(["glue/rte", "glue/mnli", "glue/rte"]):  # the latest run is RTE's
        run = _record(tmp_path / str(number), task, "hypermoe", 1, [f"data.task={task[5:]}"])
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "epoch01.ckpt").write_bytes(b"")
    assert choose_run(ax, table_runs(tmp_path, GLUE_GRID, "hypermoe", None))[0].folder == tmp_path / "1"
    shutil.rmtree(tmp_path / "1" / "checkpoints")
    chosen = choose_run(ax, table_runs(tmp_path, GLUE_GRID, "hypermoe", None))[0]
    assert chosen.folder == tmp_path / "2" and chosen.checkpoint() == tmp_path / "2" / "checkpoints" / "epoch01.ckpt"


def test_predictions_come_from_the_best_checkpoint_before_the_last(tmp_path):
    """The model selection chose the best epoch: a run that kept both predicts with it."""
    run = Run(tmp_path, {})
    assert run.checkpoint() is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert run.checkpoint() == tmp_path / "checkpoints" / "last.ckpt"
    (tmp_path / "checkpoints" / "epoch01.ckpt").write_bytes(b"")
    assert run.checkpoint() == tmp_path / "checkpoints" / "epoch01.ckpt"


def test_a_table_of_another_benchmark_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"table=char_lm_cpu sweeps data=\[\]: a submission needs one of"):
        make_submission("char_lm_cpu", "topk", None, tmp_path, tmp_path / "out", [])


def test_a_misspelt_table_or_model_or_a_table_without_runs_ends_with_its_message(tmp_path, capsys, caplog):
    """None of them writes a submission: an empty zip would look like one."""
    log_dir = ["--log-dir", str(tmp_path)]
    for argv, code, message in [  # the expected errors are logged (to stderr), argparse's printed
        (["superglu_cpu", *log_dir], 2, "invalid configuration: table='superglu_cpu' is not a table of conf/table/"),
        (["superglue_cpu", "--model", "hypermo", *log_dir], 2, "--model hypermo: not one of the variants"),
        (["superglue_cpu", "--seed", "3", *log_dir], 2, "no finished run of model=hypermoe seed=3 (and no"),
        (["superglue_cpu", "--only", "ablation", *log_dir], 2, "--only ablation: write it KEY=VALUE"),
        (["superglue_cpu", "--only", "ablation=agg_sum", *log_dir], 2, "model=hypermoe ablation=agg_sum (and no"),
    ]:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        captured = capsys.readouterr()
        assert stop.value.code == code and message in captured.out + captured.err + caplog.text
        caplog.clear()
    assert not (tmp_path / "submission").exists()


@pytest.mark.slow  # trains one step and predicts RTE's test split and both diagnostics (4,460 rows)
def test_make_submission_gathers_a_tables_runs(tmp_path, data_root, capsys):
    sweep = tmp_path / "table" / "superglue_cpu" / "2026-01-01_00-00-00"
    overrides = ["seed=1", "data=superglue", "data.task=rte", "model=topk", "table=superglue_cpu"]
    rte = sweep / "0"
    short = ["trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=0"]
    small = ["data.max_length=32", "data.eval_batch_size=256", "data.max_train_examples=8"]
    run(compose_config("train", [*TINY, *overrides[:4], *short, *small, f"paths.data_dir={data_root}"], rte))
    _record(rte, "superglue/rte", "topk", 1, [*overrides, f"paths.data_dir={data_root}"])  # as Hydra records them
    _record(sweep / "1", "superglue/cb", "topk", 1, overrides)  # its checkpoints deleted by keep_checkpoints=false
    quiet = ["+trainer.enable_progress_bar=false", f"paths.data_dir={data_root}"]
    argv = ["superglue_cpu", "--model", "topk", "--log-dir", str(tmp_path), "--", *quiet]
    assert main(argv) == 0
    out = tmp_path / "submission" / "superglue_cpu_topk"
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert list(manifest["files"]) == ["RTE.jsonl", "AX-b.jsonl", "AX-g.jsonl"]
    assert manifest["missing"]["CB.jsonl"].startswith("its 1 run(s) of superglue/cb kept no checkpoint")
    assert manifest["missing"]["WiC.jsonl"] == "no run of superglue/wic" and len(manifest["missing"]) == 7
    assert "not a task of this project" in manifest["missing"]["ReCoRD.jsonl"]
    for file, split, rows in [("RTE.jsonl", "test", 3000), ("AX-b.jsonl", "ax_b", 1104), ("AX-g.jsonl", "ax_g", 356)]:
        entry = manifest["files"][file]
        assert entry["task"] == "superglue/rte" and entry["split"] == split and entry["rows"] == rows
        assert entry["run"] == "2026-01-01_00-00-00/0" and entry["checkpoint"] == "checkpoints/last.ckpt"
        assert entry["overrides"] == overrides and entry["git"] == "abc123"  # no paths.* override
        assert (rte / "submission" / split / file).is_file()  # kept in the run for the next submission
    assert -1 <= manifest["files"]["AX-b.jsonl"]["scores"]["matthews"] <= 1
    assert "gender_parity" in manifest["files"]["AX-g.jsonl"]["scores"]
    with zipfile.ZipFile(out.with_name(out.name + ".zip")) as archive:
        assert archive.namelist() == ["RTE.jsonl", "AX-b.jsonl", "AX-g.jsonl"]  # the files alone, at the top
        lines = archive.read("RTE.jsonl").decode().splitlines()
    assert [json.loads(line)["idx"] for line in lines] == list(range(3000))
    assert "superglue_cpu_topk: 3 of 10 files" in capsys.readouterr().out
    # predictions kept in the run are gathered again once its checkpoint is gone
    shutil.rmtree(rte / "checkpoints")
    again = make_submission("superglue_cpu", "topk", None, tmp_path, tmp_path / "again", [])
    assert again["files"] == manifest["files"]
    assert (tmp_path / "again" / "RTE.jsonl").read_bytes() == (out / "RTE.jsonl").read_bytes()
