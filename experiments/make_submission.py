"""One table's test-set predictions as the submission its leaderboard grades: a folder, its zip and
a manifest.

    python experiments/make_submission.py superglue_cpu                    # hypermoe's runs
    python experiments/make_submission.py glue_cpu --model topk --seed 1 -- trainer=gpu
    python experiments/make_submission.py hyper_ablation_cpu --only ablation=agg_mean

The runs are those under ``<log_dir>/table/<table>/`` (as ``run_grid.py`` finds them: each folder
with a ``metrics.json``) whose variant is ``--model`` (and seed ``--seed``) and that ran the table's
grid as ``run_grid.py`` counts its jobs: no settings beyond the grid's keys (a short trial run with
``trainer.max_steps=4`` is not one), or exactly those named with ``--only KEY=VALUE``, which also
chooses grid values (``--only ablation=agg_mean``). They must share one configuration, all but their
task and seed: an ablation table's rows, which share a variant, are told apart with ``--only``,
never picked by age. Each file
the benchmark's leaderboard grades (SuperGLUE: ``<Task>.jsonl``, ``AX-b.jsonl``, ``AX-g.jsonl``;
GLUE: ``<Task>.tsv``, ``AX.tsv``) comes from the latest such run of its task (the diagnostics: of
the task that predicts them, ``hypermoe.data.diagnostics``) that can give it: predictions it already
holds in ``<run>/submission/<split>/``, else ones made now by ``eval.py split=<split>`` on its
checkpoint (the best one, else ``last.ckpt``) and kept there; the arguments after ``--`` go to
every such eval. A table's runs delete their checkpoints unless trained with
``keep_checkpoints=true``, so a file with neither predictions nor a checkpoint is listed as
missing, with why; nothing is ever filled in for it.

It writes ``<out>/`` (default ``<log_dir>/submission/<table>_<model>[_seed<N>][_<KEY>-<VALUE>...]``) with the files,
``<out>.zip`` with the files alone (what the site takes), and ``<out>/manifest.yaml``: per file
its task, split, run, checkpoint, the run's overrides (less ``paths.*``), git commit and row count
(the diagnostics: their scores too), and the missing files with the reason. A file whose prediction
fails (a damaged checkpoint, a data file absent) is listed under ``failed`` with the error, the
others are still written, and the exit status is 1.
"""

import argparse
import functools
import json
import logging
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import yaml
from run_grid import as_recorded, grid_of, other_settings, override_key

from hypermoe.cli import EXIT_CODES, exit_on_expected_errors
from hypermoe.config import PROJECT_ROOT, compose_config, names_machine_paths
from hypermoe.data.diagnostics import DIAGNOSTICS
from hypermoe.data.submission import submission_name
from hypermoe.data.tasks import TASKS
from hypermoe.errors import ConfigError
from hypermoe.evaluate import run_eval
from hypermoe.moe.build import VARIANTS

log = logging.getLogger("make_submission")

# files the leaderboards grade that no task of this project predicts, with why
NOT_PREDICTED = {
    "superglue": {"ReCoRD.jsonl": "ReCoRD (cloze-style span selection) is not a task of this project"},
    "glue": {"MNLI-mm.tsv": "the mnli task here is the matched set only"},
}
# the grid keys whose values the runs of one submission may differ in: which task, and the seed
PER_RUN_KEYS = ("data", "data.task", "seed")


@dataclass(frozen=True)
class Wanted:
    """A file of the submission: what eval split writes it, and which tasks' runs may predict it."""

    file: str
    split: str
    tasks: tuple[str, ...]  # qualified names, preferred first


@dataclass(frozen=True)
class Run:
    folder: Path
    record: dict[str, Any]  # its metrics.json

    @property
    def task(self) -> str:
        return self.record["task"]

    def predictions(self, split: str) -> Path:
        return self.folder / "submission" / split

    def checkpoint(self) -> Path | None:
        """The best checkpoint by the selection metric, else ``last.ckpt``; None when deleted."""
        folder = self.folder / "checkpoints"
        best = sorted((p for p in folder.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime)
        last = folder / "last.ckpt"
        return best[-1] if best else last if last.is_file() else None

    def can_give(self, split: str) -> bool:
        return (self.predictions(split) / "eval_metrics.json").is_file() or self.checkpoint() is not None

    def overrides(self) -> list[str]:
        path = self.folder / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(path.read_text()) if path.is_file() else []
        return [override for override in overrides or [] if not names_machine_paths(override)]

    @functools.cached_property
    def recorded(self) -> list[str]:
        """Its overrides as Hydra records them (``run_grid.as_recorded``), parsed once per run."""
        return as_recorded(self.overrides())


def wanted_files(benchmark: str) -> list[Wanted]:
    """Every file the benchmark's leaderboard grades, in the order it lists them: one per task with a
    test split, the first task that names a file (a task added from another's files, e.g. a subset
    of its sources, names the same one) gives it."""
    by_file: dict[str, Wanted] = {}
    for task in TASKS[benchmark].values():
        name = submission_name(task)
        if "test" in task.files and name not in by_file:
            by_file[name] = Wanted(name, "test", (task.qualified_name,))
    return list(by_file.values()) + [
        Wanted(d.submission, split, d.predicted_by) for split, d in DIAGNOSTICS.items() if d.benchmark == benchmark
    ]


def table_benchmark(grid: dict[str, list[str]], table: str) -> str:
    """The benchmark the table's grid trains on (its ``data`` key)."""
    data = grid.get("data", [])
    if len(data) != 1 or data[0] not in TASKS:
        raise ConfigError(f"table={table} sweeps data={data}: a submission needs one of {sorted(TASKS)}")
    return data[0]


def table_runs(
    runs_dir: Path, grid: dict[str, list[str]], model: str, seed: int | None, only: Sequence[str] = ()
) -> list[Run]:
    """The runs of variant ``model`` (and ``seed``) under ``runs_dir``, oldest first, that ran the
    table's grid as ``run_grid.py`` counts its jobs: with the grid values ``only`` names and no
    settings beyond the grid (``run_grid.other_settings``) but those ``only`` names, so a short trial
    run is not submitted for the grid's."""
    values = {item for item in as_recorded(only) if override_key(item) in grid}
    settings = other_settings(only, grid)
    runs = []
    for metrics in sorted(runs_dir.glob("**/metrics.json"), key=lambda path: (path.stat().st_mtime, path)):
        run = Run(metrics.parent, json.loads(metrics.read_text()))
        chosen = run.record.get("model") == model and seed in (None, run.record.get("seed"))
        if chosen and values <= set(run.recorded) and other_settings(run.recorded, grid) == settings:
            runs.append(run)
    return runs


def check_one_configuration(runs: list[Run], grid: dict[str, list[str]]) -> None:
    """Refuses runs that differ in a grid value other than ``PER_RUN_KEYS`` (an ablation table's
    rows share a variant): the submission would mix them, each file from whichever ran last."""
    configurations = [
        frozenset(o for o in run.recorded if override_key(o) in set(grid) - set(PER_RUN_KEYS)) for run in runs
    ]
    differing = sorted(frozenset.union(*configurations) - frozenset.intersection(*configurations))
    if differing:
        raise ConfigError(
            f"the runs to submit differ in {differing}: choose the configuration to submit with "
            f"--only KEY=VALUE (e.g. --only {differing[0]})"
        )


def choose_run(wanted: Wanted, runs: list[Run]) -> tuple[Run | None, str]:
    """The latest run of the first of the wanted tasks that can give the file; else None and why."""
    for task in wanted.tasks:
        usable = [run for run in runs if run.task == task and run.can_give(wanted.split)]
        if usable:
            return usable[-1], ""
    trained = [run for run in runs if run.task in wanted.tasks]
    if not trained:
        return None, f"no run of {' or '.join(wanted.tasks)}"
    return None, (
        f"its {len(trained)} run(s) of {' or '.join(wanted.tasks)} kept no checkpoint and wrote no predictions "
        "(train with keep_checkpoints=true)"
    )


def predict(run: Run, split: str, extra: list[str]) -> dict[str, Any]:
    """eval.py's record of the run's predictions of ``split``, predicting them first if need be."""
    folder = run.predictions(split)
    record = folder / "eval_metrics.json"
    if not record.is_file():
        log.info("%s: predicting %s with %s", run.folder, split, run.checkpoint())
        run_eval(compose_config("eval", [f"ckpt_path={run.checkpoint()}", f"split={split}", *extra], folder))
    return json.loads(record.read_text())


def manifest_entry(run: Run, wanted: Wanted, evaluated: dict[str, Any], runs_dir: Path) -> dict[str, Any]:
    checkpoint = Path(evaluated["ckpt_path"])
    scores = {key: value for key, value in evaluated[wanted.split].items() if key not in ("submission", "rows")}
    return {
        "task": run.task,
        "split": wanted.split,
        "run": str(run.folder.relative_to(runs_dir)),
        "checkpoint": str(checkpoint.relative_to(run.folder))
        if checkpoint.is_relative_to(run.folder)
        else checkpoint.name,
        "overrides": run.overrides(),
        "git": run.record.get("git"),
        "rows": evaluated[wanted.split]["rows"],
        **({"scores": scores} if scores else {}),
    }


def make_submission(
    table: str, model: str, seed: int | None, log_dir: Path, out: Path, extra: list[str], only: Sequence[str] = ()
) -> dict[str, Any]:
    """Writes the submission folder, its zip and its manifest; returns the manifest."""
    grid = grid_of(table)
    benchmark = table_benchmark(grid, table)
    runs_dir = (log_dir / "table" / table).resolve()
    runs = table_runs(runs_dir, grid, model, seed, only) if runs_dir.is_dir() else []
    if not runs:  # a zip without a file is no submission
        chosen = "".join(f" {item}" for item in [*([f"seed={seed}"] if seed is not None else []), *only])
        raise ConfigError(
            f"no finished run of model={model}{chosen} (and no other settings beyond the grid's) under {runs_dir}: "
            f"run the table first (make grid T={table}), or name a run's other settings with --only"
        )
    check_one_configuration(runs, grid)
    files, missing, failed = {}, dict(NOT_PREDICTED[benchmark]), {}
    out.mkdir(parents=True, exist_ok=True)
    for wanted in wanted_files(benchmark):
        (out / wanted.file).unlink(missing_ok=True)  # nothing left from an earlier submission
        run, why = choose_run(wanted, runs)
        if run is None:
            missing[wanted.file] = why
            continue
        try:
            evaluated = predict(run, wanted.split, extra)
        except tuple(EXIT_CODES) as error:  # a checkpoint or data file that fails costs its own file only
            failed[wanted.file] = f"predicting it with {run.folder} failed: {type(error).__name__}: {error}"
            log.error("%s: %s", wanted.file, failed[wanted.file])
            continue
        (out / wanted.file).write_bytes((run.predictions(wanted.split) / wanted.file).read_bytes())
        files[wanted.file] = manifest_entry(run, wanted, evaluated, runs_dir)
    with zipfile.ZipFile(zip_of(out), "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:  # at the archive's top level, as the leaderboards read it
            archive.write(out / name, name)
    manifest = {
        "table": table,
        "benchmark": benchmark,
        "model": model,
        "seed": seed,
        "only": list(only),
        "files": files,
        "missing": missing,
        "failed": failed,
    }
    (out / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return manifest


def zip_of(out: Path) -> Path:
    """The zip beside the submission folder, named after all of it: ``with_suffix`` would cut a
    dotted name (``..._trainer.max_steps-4``) at its last dot, and two submissions would share a zip."""
    return out.with_name(out.name + ".zip")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="a GLUE or SuperGLUE conf/table/ option, e.g. superglue_cpu")
    parser.add_argument("--model", default="hypermoe", help="the variant whose runs are submitted")
    parser.add_argument("--seed", type=int, help="only this seed's runs (default: the latest run of any seed)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="KEY=VALUE", help="only runs with this override (repeat)"
    )
    parser.add_argument("--log-dir", type=Path, default=PROJECT_ROOT / "outputs", help="paths.log_dir")
    parser.add_argument(
        "--out", type=Path, help="default: <log-dir>/submission/<table>_<model>[_seed<N>][_<KEY>-<VALUE>...]"
    )
    args, extra = parser.parse_known_args(argv)
    extra = [item for item in extra if item != "--"]
    if args.model not in VARIANTS:
        parser.error(f"--model {args.model}: not one of the variants {sorted(VARIANTS)}")
    malformed = [item for item in args.only if "=" not in item]
    if malformed:
        parser.error(f"--only {malformed[0]}: write it KEY=VALUE, as the run's .hydra/overrides.yaml does")
    name = "_".join(
        [args.table, args.model, *([f"seed{args.seed}"] if args.seed is not None else []), *args.only]
    ).replace("=", "-")
    out = args.out or args.log_dir / "submission" / name
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with exit_on_expected_errors():
        manifest = make_submission(args.table, args.model, args.seed, args.log_dir, out, extra, args.only)
    total = len(manifest["files"]) + len(manifest["missing"]) + len(manifest["failed"])
    print(f"{name}: {len(manifest['files'])} of {total} files in {zip_of(out)}; manifest {out}/manifest.yaml")
    for status in ("missing", "failed"):
        for file, why in manifest[status].items():
            print(f"  {status} {file}: {why}")
    return 1 if manifest["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
