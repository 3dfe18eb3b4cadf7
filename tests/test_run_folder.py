"""A run or a multirun never writes into a folder another one holds (hypermoe.run_folder)."""

from pathlib import Path

import pytest
from helpers import train_cli
from omegaconf import OmegaConf

from hypermoe.run_folder import OwnRunFolder


def _hydra_config(run_dir: Path, *overrides: str, output_subdir: str | None = ".hydra", sweep_dir: Path | None = None):
    """The part of a composed config's ``hydra`` node the callback reads."""
    hydra = {
        "output_subdir": output_subdir,
        "run": {"dir": str(run_dir)},
        "sweep": {"dir": str(sweep_dir or run_dir)},
        "overrides": {"hydra": list(overrides)},
    }
    return OmegaConf.create({"hydra": hydra})


def test_runs_named_after_the_same_second_get_folders_of_their_own(tmp_path):
    default = tmp_path / "runs" / "2026-12-06_07-27-31"
    configs = [_hydra_config(default) for _ in range(3)]
    for config in configs:
        OwnRunFolder().on_run_start(config)
    folders = [config.hydra.run.dir for config in configs]
    assert folders == [str(default), f"{default}_2", f"{default}_3"]
    assert all(Path(folder).is_dir() for folder in folders)  # claimed: created before Hydra writes


def test_a_run_given_a_folder_that_holds_a_run_stops_before_writing_anything(tmp_path):
    earlier = tmp_path / "earlier"
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / ".hydra" / "overrides.yaml").write_text("- model=hypermoe\n")
    (earlier / "metrics.json").write_text('{"model": "hypermoe"}\n')
    result = train_cli(earlier, "experiment=synthetic_tiny", "model=topk", "debug=fast_dev_run")
    assert result.returncode == 2
    assert f"invalid configuration: hydra.run.dir={earlier} already holds a run (.hydra/)" in result.stderr
    assert (earlier / "metrics.json").read_text() == '{"model": "hypermoe"}\n'
    assert (earlier / ".hydra" / "overrides.yaml").read_text() == "- model=hypermoe\n"
    assert sorted(path.name for path in earlier.iterdir()) == [".hydra", "metrics.json"]


@pytest.mark.parametrize("prefix", ["", "++"])  # both spellings Hydra takes for a key it has
def test_a_given_folder_without_a_run_and_a_ddp_rank_process_are_left_alone(tmp_path, prefix):
    empty = tmp_path / "empty"
    empty.mkdir()
    config = _hydra_config(empty, f"{prefix}hydra.run.dir={empty}")
    OwnRunFolder().on_run_start(config)
    assert config.hydra.run.dir == str(empty)
    (empty / ".hydra").mkdir()  # the run's rank 0 wrote it; Lightning starts the other ranks without one
    rank = _hydra_config(empty, f"hydra.run.dir={empty}", "hydra.output_subdir=null", output_subdir=None)
    OwnRunFolder().on_run_start(rank)
    assert rank.hydra.run.dir == str(empty)


def test_a_multirun_given_a_sweep_folder_with_jobs_stops(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    with pytest.raises(SystemExit) as stop:
        OwnRunFolder().on_multirun_start(_hydra_config(tmp_path, f"hydra.sweep.dir={sweep}", sweep_dir=sweep))
    assert stop.value.code == 2
    assert f"hydra.sweep.dir={sweep} already holds a multirun's jobs ({sweep / '0'}, ...)" in capsys.readouterr().err


def test_multiruns_named_after_the_same_second_do_not_share_a_folder(tmp_path, capsys):
    default = tmp_path / "multiruns" / "2026-12-06_07-27-31"
    OwnRunFolder().on_multirun_start(_hydra_config(tmp_path, sweep_dir=default))
    assert default.is_dir()
    with pytest.raises(SystemExit) as stop:
        OwnRunFolder().on_multirun_start(_hydra_config(tmp_path, sweep_dir=default))
    assert stop.value.code == 2
    assert f"another multirun started in the same second writes into {default}" in capsys.readouterr().err


@pytest.mark.parametrize("given", [True, False])
def test_a_folder_that_cannot_be_created_stops_the_run_naming_the_key(tmp_path, capsys, given):
    (tmp_path / "file").write_text("")
    folder = tmp_path / "file" / "run"
    config = _hydra_config(folder, *([f"hydra.run.dir={folder}"] if given else []))
    with pytest.raises(SystemExit) as stop:
        OwnRunFolder().on_run_start(config)
    assert stop.value.code == 2
    assert f"invalid configuration: hydra.run.dir: cannot create the folder {folder if given else folder.parent}: a " \
        f"file is in its way ({tmp_path / 'file'}" in capsys.readouterr().err  # fmt: skip
    sweep = _hydra_config(tmp_path, f"hydra.sweep.dir={folder}", sweep_dir=folder)
    with pytest.raises(SystemExit):
        OwnRunFolder().on_multirun_start(sweep)
    assert (
        f"hydra.sweep.dir: cannot create the folder {tmp_path / 'file'}: a file is in its way"
        in capsys.readouterr().err
    )
