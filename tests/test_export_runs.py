"""experiments/export_runs.py: a table's run records copied without anything of the machine they ran on."""

import json
import sys

import pytest
import yaml
from helpers import PROJECT

sys.path.insert(0, str(PROJECT / "experiments"))
from export_runs import export_runs, main
from run_grid import finished_jobs


def _sweep(root, name: str, jobs: dict[str, list[str]]) -> None:
    sweep = root / name
    task = ["table=char_lm_cpu", "paths.log_dir=/somewhere/outputs", "model=topk,hypermoe"]
    hydra = {"sweep": {"dir": str(sweep)}, "overrides": {"task": task, "hydra": [f"hydra.sweep.dir={sweep}"]}}
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra, "seed": 1}))
    for job, overrides in jobs.items():
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (sweep / job / ".hydra" / "config.yaml").write_text(f"paths:\n  log_dir: {sweep}\n")
        (sweep / job / "checkpoints").mkdir()
        (sweep / job / "checkpoints" / "last.ckpt").write_bytes(b"weights")
        if job != "killed":
            (sweep / job / "metrics.json").write_text(json.dumps({"model": overrides[0], "best": {"loss": 1.8}}))


def test_records_are_copied_and_nothing_of_the_machine(tmp_path):
    runs, out = tmp_path / "outputs" / "table" / "char_lm_cpu", tmp_path / "records"
    _sweep(runs, "2026-01-01_00-00-00", {"0": ["model=topk", "seed=1", "paths.data_dir=/data"], "killed": ["seed=2"]})
    _sweep(runs, "2026-01-02_00-00-00", {"0": ["model=hypermoe", "seed=1"]})

    assert export_runs(runs, out) == 2  # the killed job left no metrics.json: no record
    copied = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert copied == [
        "2026-01-01_00-00-00/0/.hydra/overrides.yaml",
        "2026-01-01_00-00-00/0/metrics.json",
        "2026-01-01_00-00-00/multirun.yaml",
        "2026-01-02_00-00-00/0/.hydra/overrides.yaml",
        "2026-01-02_00-00-00/0/metrics.json",
        "2026-01-02_00-00-00/multirun.yaml",
    ]
    for path in out.rglob("*.yaml"):
        assert str(tmp_path) not in path.read_text() and "/somewhere" not in path.read_text()
    command = yaml.safe_load((out / "2026-01-01_00-00-00" / "multirun.yaml").read_text())
    assert command == {"hydra": {"overrides": {"task": ["table=char_lm_cpu", "model=topk,hypermoe"]}}}
    job = out / "2026-01-01_00-00-00" / "0"
    assert yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) == ["model=topk", "seed=1"]
    assert (job / "metrics.json").read_text() == (runs / "2026-01-01_00-00-00" / "0" / "metrics.json").read_text()
    # copied back, the runs count as done for run_grid
    grid = {"model": ["topk", "hypermoe"], "seed": ["1"]}
    assert finished_jobs(out, grid) == {(("model", "topk"), ("seed", "1")), (("model", "hypermoe"), ("seed", "1"))}


def test_one_run_exported_on_its_own_writes_nothing_beside_its_copy(tmp_path):
    """Its sweep's multirun.yaml is outside what was asked for: a second export would overwrite it."""
    runs, out = tmp_path / "outputs", tmp_path / "records" / "one"
    _sweep(runs, "sweep", {"0": ["model=topk", "seed=1"]})
    assert export_runs(runs / "sweep" / "0", out) == 1
    assert sorted(
        str(p.relative_to(tmp_path / "records")) for p in (tmp_path / "records").rglob("*") if p.is_file()
    ) == [
        "one/.hydra/overrides.yaml",
        "one/metrics.json",
    ]


def test_a_missing_folder_or_a_damaged_record_stops_the_export_before_any_copy(tmp_path):
    with pytest.raises(SystemExit, match=r"export_runs: .*nope: no such folder of runs"):
        main([str(tmp_path / "nope"), str(tmp_path / "out")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"export_runs: .*empty: no run record \(metrics.json\) under it"):
        main([str(tmp_path / "empty"), str(tmp_path / "out")])
    _sweep(tmp_path / "runs", "grid", {"0": ["model=topk"], "1": ["model=hypermoe"]})
    (tmp_path / "runs" / "grid" / "1" / "metrics.json").write_text('{"model": "hyper')  # cut off mid-write
    with pytest.raises(SystemExit, match=r"grid/1/metrics.json: not a readable run record .*; nothing copied"):
        main([str(tmp_path / "runs"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match=r"export_runs: cannot write the copy under .*file/sub"):
        main([str(tmp_path / "runs" / "grid" / "0"), str(tmp_path / "file" / "sub")])


@pytest.mark.parametrize(
    "damage, message",
    [  # (which file of job 1 and what it holds, the error); job 0 comes first and would be copied first
        (("1/.hydra/overrides.yaml", "- model=topk\n  seed: [1"), r"grid/1/\.hydra/overrides\.yaml: not readable YAML"),
        (("1/.hydra/overrides.yaml", "model: topk\n"), r"grid/1/\.hydra/overrides\.yaml: holds no list of overrides"),
        (("multirun.yaml", "hydra:\n  overrides: {}\n"), r"grid/multirun\.yaml: holds no list of overrides"),
    ],
)
def test_damaged_overrides_stop_the_export_before_any_copy(tmp_path, damage, message):
    _sweep(tmp_path / "runs", "grid", {"0": ["model=topk"], "1": ["model=hypermoe"]})
    path, text = damage
    (tmp_path / "runs" / "grid" / path).write_text(text)
    with pytest.raises(SystemExit, match=message + r".*; nothing copied"):
        main([str(tmp_path / "runs"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
