"""Run the jobs of a paper table's grid that have no result yet, N at a time, one core each.

    python experiments/run_grid.py char_lm_cpu --dry-run     # list the grid's missing jobs
    python experiments/run_grid.py char_lm_cpu --jobs 2      # run them, two at once
    python experiments/run_grid.py char_lm_cpu --only model=ffn,topk --only seed=1   # part of the grid

The grid is the table's ``hydra.sweeper.params`` (conf/table/<table>.yaml), expanded by Hydra's
own override parser as its basic sweeper expands it. A job is done when a ``metrics.json`` under
``<log_dir>/table/<table>/`` comes from a job whose overrides (``.hydra/overrides.yaml``) hold the
same value for every grid key and, beyond the grid's keys, the table, ``paths.*`` and
``keep_checkpoints``, the same settings as the arguments after ``--`` (a short trial run does not
count for the grid); a run that was killed left none, so it is run again, and nothing that finished
is run twice. Each missing job runs as ``python train.py table=<table> key=value ...`` (a one-job
multirun: command-line values take precedence over the table's sweep) in a sweep folder of its own,
with one thread pinned to one core, so N jobs share N cores without contending; its log goes to
``<log_dir>/table_logs/<table>/``. Extra arguments after ``--`` are passed to every job;
a grid key is not one of them (``--only`` chooses its values). A SIGTERM to this process is passed
on to the running jobs, which stop resumably; no more start, and it exits with 143.
"""

import argparse
import itertools
import os
import queue
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, OverrideParseException

from hypermoe.config import CONF_DIR, PROJECT_ROOT, config_options, names_machine_paths
from hypermoe.errors import ConfigError
from hypermoe.job_processes import SIGTERM_EXIT_CODE, ForwardSigterm

Job = tuple[tuple[str, str], ...]  # ((grid key, value), ...) in the sweep's key order
# overrides that leave a run's results as they are: runs with and without them count alike
SAME_RESULTS_KEYS = ("keep_checkpoints",)


def grid_of(table: str) -> dict[str, list[str]]:
    """The table's sweep: each key with its values, as override strings."""
    tables = config_options("table")
    if table not in tables:
        raise ConfigError(f"table={table!r} is not a table of conf/table/: {tables}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"table={table}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([f"{key}={value}" for key, value in params.items()])
    return {
        override.get_key_element(): list(override.sweep_string_iterator())
        if override.is_sweep_override()
        else [override.get_value_element_as_str()]
        for override in parsed
    }


def check_composes(table: str, job: Job, extra: list[str]) -> None:
    """A job's config composes: Hydra refuses a misspelt key of the table's sweep or after ``--``,
    which would otherwise fail every job of the grid, one after another."""
    overrides = [f"table={table}", *(f"{key}={value}" for key, value in job), *extra]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            compose(config_name="train", overrides=overrides)
        except ConfigCompositionException as error:
            raise ConfigError(f"the grid's job {' '.join(overrides[1:])} does not compose: {error}") from None


def jobs_of(grid: dict[str, list[str]]) -> list[Job]:
    """Every job, seed by seed: each setting's first seed comes before any setting's second, so a
    grid stopped part-way has covered its settings evenly."""
    keys = sorted(grid, key=lambda key: key != "seed")  # seed varies slowest
    jobs = [tuple(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]
    return [tuple((key, dict(job)[key]) for key in grid) for job in jobs]  # in the sweep's key order


def select_jobs(jobs: list[Job], grid: dict[str, list[str]], only: list[str]) -> list[Job]:
    """The jobs whose value of each ``KEY=V1,V2`` in ``only`` is one of those listed (a key given
    twice: the values of both), in grid order."""
    wanted: dict[str, set[str]] = {}
    for item in only:
        key, _, values = item.partition("=")
        if key not in grid:
            raise ValueError(f"--only {item}: {key!r} is not a key of the grid {sorted(grid)}")
        unknown = [value for value in values.split(",") if value not in grid[key]]
        if unknown or not values:
            raise ValueError(f"--only {item}: {unknown or values!r} not among {key}'s values {grid[key]}")
        wanted.setdefault(key, set()).update(values.split(","))
    return [job for job in jobs if all(dict(job)[key] in values for key, values in wanted.items())]


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def as_recorded(overrides: Iterable[str]) -> list[str]:
    """Overrides as a multirun job's ``.hydra/overrides.yaml`` records them: Hydra's basic sweeper
    writes each one again from its parsed form (``1e-3`` as ``0.001``, ``~key`` as ``~key=null``)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [f"{override.get_key_element()}={override.get_value_element_as_str()}" for override in parsed]


def other_settings(overrides: Iterable[str], keys: Iterable[str]) -> frozenset[str]:
    """The overrides that set more than the grid's values, as recorded: not its keys, the table,
    Hydra's own settings, the machine's folders (``paths.*``) or ``SAME_RESULTS_KEYS``."""
    named = {*keys, "table", *SAME_RESULTS_KEYS}
    return frozenset(
        override
        for override in as_recorded(overrides)
        if override_key(override) not in named
        and not override_key(override).startswith(("hydra.", "hydra/"))
        and not names_machine_paths(override)
    )


def grid_runs(runs_dir: Path, keys: Iterable[str]) -> list[tuple[Job, frozenset[str]]]:
    """Each run under ``runs_dir`` that finished (a metrics.json) a job of the grid: the job, read
    from the run's overrides, and the run's ``other_settings``."""
    keys = list(keys)
    runs = []
    for metrics in runs_dir.glob("**/metrics.json"):
        overrides_file = metrics.parent / ".hydra" / "overrides.yaml"
        if not overrides_file.is_file():
            continue
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        values = dict(override.split("=", 1) for override in overrides)
        if all(key in values for key in keys):
            runs.append((tuple((key, values[key]) for key in keys), other_settings(overrides, keys)))
    return runs


def finished_jobs(runs_dir: Path, keys: Iterable[str], extra: Iterable[str] = ()) -> set[Job]:
    """The grid jobs that a run under ``runs_dir`` finished with the settings ``extra`` give, no
    more and no fewer: a short trial run (``trainer.max_steps=4``) does not count for the grid."""
    keys = list(keys)
    settings = other_settings(extra, keys)
    return {job for job, other in grid_runs(runs_dir, keys) if other == settings}


def job_name(job: Job) -> str:
    return "_".join(f"{key.split('.')[-1]}-{value}" for key, value in job).replace("/", "-")


def run_job(table: str, job: Job, core: int, log_dir: Path, extra: list[str], stop: ForwardSigterm) -> int:
    name = job_name(job)
    sweep_dir = log_dir / "table" / table / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{name}"
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), f"table={table}"]
    command += [f"{key}={value}" for key, value in job] + [f"hydra.sweep.dir={sweep_dir}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log_path = log_dir / "table_logs" / table / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        start = time.perf_counter()
        process = subprocess.Popen(  # pinned: N jobs on N cores, none migrating onto another's
            command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, {core}),
        )  # fmt: skip
        stop.started(process)
        code = process.wait()
        stop.ended(process)
    seconds = time.perf_counter() - start
    why = f": {failure_of(sweep_dir, log_path)} (log: {log_path})" if code else ""
    print(f"{name}: exit {code} after {seconds:.0f} s{why}", flush=True)
    return code


def failure_of(sweep_dir: Path, log_path: Path) -> str:
    """Why a job failed: the error its sweep recorded (failures.yaml), else the last line of its log
    (a job killed, or one that failed before its sweep began)."""
    failures = sweep_dir / "failures.yaml"
    if failures.is_file():
        (first, *_) = yaml.safe_load(failures.read_text())["failures"]
        return f"{first['type']}: {first['message']}"
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s TABLE [options] [-- KEY=VALUE ...]",
        epilog="Overrides after -- go to every job (e.g. -- trainer.max_steps=4 for a short trial).",
    )
    parser.add_argument("table", help="a conf/table/ option, e.g. char_lm_cpu")
    parser.add_argument("--jobs", type=int, default=1, help="jobs at once, one core each")
    parser.add_argument("--log-dir", type=Path, default=PROJECT_ROOT / "outputs", help="paths.log_dir")
    parser.add_argument("--dry-run", action="store_true", help="list the missing jobs, run none")
    parser.add_argument(
        "--only", action="append", default=[], metavar="KEY=V1,V2", help="only the jobs with these values (repeat)"
    )
    args, extra = parser.parse_known_args(argv)
    extra = [item for item in extra if item != "--"]
    cores = sorted(os.sched_getaffinity(0))
    if not 1 <= args.jobs <= len(cores):
        parser.error(f"--jobs {args.jobs}: this process may use {len(cores)} core(s)")
    try:
        grid = grid_of(args.table)
        jobs = select_jobs(jobs_of(grid), grid, args.only)
    except ValueError as error:
        parser.error(str(error))
    in_grid = [item for item in extra if override_key(item) in grid]
    if in_grid:  # it would replace every job's own value, under the job's name
        parser.error(f"{in_grid[0]} after --: {override_key(in_grid[0])} is a key of the grid; choose with --only")
    try:
        settings = other_settings(extra, grid)
    except OverrideParseException as error:
        parser.error(f"after --: {error}")
    try:
        check_composes(args.table, jobs[0], extra)  # before the dry run's list, and before any job runs
    except ConfigError as error:
        parser.error(str(error))
    runs_dir = args.log_dir / "table" / args.table
    done = finished_jobs(runs_dir, grid, extra)
    others = [other for _, other in grid_runs(runs_dir, grid) if other != settings]
    missing = [job for job in jobs if job not in done]
    chosen = " chosen" if args.only else ""
    print(f"{args.table}: {len(jobs)} jobs{chosen} in the grid, {len(jobs) - len(missing)} done, {len(missing)} to run")
    if others:
        print(
            f"  ({len(others)} finished run(s) with other settings do not count, e.g. {sorted(others[0]) or 'none'}; "
            "the grid's runs are those with the settings after --)"
        )
    for job in missing:
        print("  " + " ".join(f"{key}={value}" for key, value in job))
    if args.dry_run or not missing:
        return 0
    free_cores: queue.Queue[int] = queue.Queue()
    for core in cores[: args.jobs]:
        free_cores.put(core)

    def on_a_free_core(job: Job) -> int | None:
        """The job's exit code; None when a SIGTERM came before it started."""
        core = free_cores.get()
        try:
            return None if stop.stopped else run_job(args.table, job, core, args.log_dir, extra, stop)
        finally:
            free_cores.put(core)

    with ForwardSigterm() as stop, ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(on_a_free_core, missing))
    ran = [code for code in codes if code is not None]
    failed = sum(code != 0 for code in ran)
    print(f"{args.table}: {len(ran) - failed} jobs finished, {failed} failed")
    if stop.stopped:  # the running jobs were passed the SIGTERM and have stopped
        print(f"{args.table}: stopped by SIGTERM, {len(codes) - len(ran)} jobs not started; run it again to go on")
        return SIGTERM_EXIT_CODE
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
