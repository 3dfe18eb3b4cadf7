"""Copy the records of a table's runs into the repository, so that its tables regenerate from a clone
and a grid stopped part-way goes on where it stopped.

    python experiments/export_runs.py outputs/table/char_lm_cpu experiments/results/runs/char_lm_cpu

Of every run (a folder holding ``metrics.json``) it keeps ``metrics.json`` and Hydra's
``.hydra/overrides.yaml``; of its sweep's ``multirun.yaml`` only the command-line overrides, since the
rest names the folders of the machine it ran on, as ``paths.*`` overrides do (left out of both).
Checkpoints, logs and CSV files stay behind.
``make_table.py`` reads the copy as it reads ``outputs/``; copied back under
``outputs/table/<table>/``, its runs count as done for ``run_grid.py``.
"""

import argparse
import json
import shutil
from pathlib import Path

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import yaml

from hypermoe.config import names_machine_paths


class ExportError(Exception):
    """Nothing was copied: the reason, naming the folder or file."""


def export_runs(runs_dir: Path, out_dir: Path) -> int:
    """Copy every run record under ``runs_dir`` to the same relative place under ``out_dir``;
    the number of runs copied. Every file to copy is read first: a damaged one stops the export
    before anything is copied, so the copy never holds a record that its tables would refuse."""
    if not runs_dir.is_dir():
        raise ExportError(f"{runs_dir}: no such folder of runs")
    records = sorted(runs_dir.glob("**/metrics.json"))
    if not records:
        raise ExportError(f"{runs_dir}: no run record (metrics.json) under it")
    copies = [_read_run(metrics, runs_dir) for metrics in records]
    for metrics, overrides, command in copies:
        target = out_dir / metrics.parent.relative_to(runs_dir)
        (target / ".hydra").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(metrics, target / "metrics.json")
        if overrides is not None:
            (target / ".hydra/overrides.yaml").write_text(yaml.safe_dump(_portable(overrides)))
        if command is not None:
            (target.parent / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": command}}}))
    return len(copies)


def _read_run(metrics: Path, runs_dir: Path) -> tuple[Path, list[str] | None, list[str] | None]:
    """A run's record, its overrides and its sweep's command (None where it has none), each checked."""
    try:
        record = json.loads(metrics.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{metrics}: not a readable run record ({error}); nothing copied") from None
    if not isinstance(record, dict):
        raise ExportError(f"{metrics}: not a run record (a JSON object); nothing copied")
    run, sweep = metrics.parent, metrics.parent.parent
    overrides = command = None
    if (run / ".hydra/overrides.yaml").is_file():
        overrides = _overrides(run / ".hydra/overrides.yaml", lambda loaded: loaded or [])
    # the sweep's multirun.yaml is copied when the sweep folder is among those exported (make_table's layout)
    if sweep.is_relative_to(runs_dir) and (sweep / "multirun.yaml").is_file():
        command = _portable(_overrides(sweep / "multirun.yaml", lambda loaded: loaded["hydra"]["overrides"]["task"]))
    return metrics, overrides, command


def _overrides(path: Path, pick) -> list[str]:
    """The list of override strings ``pick`` finds in the YAML file ``path``."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ExportError(f"{path}: not readable YAML ({' '.join(str(error).split())}); nothing copied") from None
    try:
        overrides = pick(loaded)
    except (KeyError, TypeError):  # no such key, or not a mapping where one belongs
        overrides = None
    if not isinstance(overrides, list) or not all(isinstance(item, str) for item in overrides):
        raise ExportError(f"{path}: holds no list of overrides where Hydra writes it; nothing copied")
    return overrides


def _portable(overrides: list[str]) -> list[str]:
    return [override for override in overrides if not names_machine_paths(override)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path, help="a table's runs, e.g. outputs/table/char_lm_cpu")
    parser.add_argument("out_dir", type=Path, help="where the records go, e.g. experiments/results/runs/char_lm_cpu")
    args = parser.parse_args(argv)
    try:
        count = export_runs(args.runs_dir, args.out_dir)
    except ExportError as error:
        raise SystemExit(f"export_runs: {error}") from None
    except OSError as error:  # the destination: under a file, not writable, full
        raise SystemExit(f"export_runs: cannot write the copy under {args.out_dir}: {error}") from None
    print(f"{count} run record(s) copied to {args.out_dir}")


if __name__ == "__main__":
    main()
