"""Two launchers that run every job of a batch whatever happens to the others; the sweep's ``FailedJobs``
callback (``_report``) records each failed job as it ends, and after the batch the launcher tables the
sweep's failed jobs:

- ``InProcessLauncher`` (``hydra/launcher=inprocess``): Hydra's basic launcher, jobs one after another
  in the sweep's process, plus that table. A SIGTERM to the sweep's process, which Lightning turns
  into a stop at the next step, fails the job it interrupted and ends the sweep with exit code 143
  (``FailedJobs``): the later jobs do not start.
- ``IsolatedLauncher`` (``hydra/launcher=isolated``): each job is ``python <app> <its overrides>`` in a
  process of its own, a single run writing into the job's sweep folder; a job killed by a signal (the
  OOM killer) or exiting non-zero fails that job only, and a completed job's return value reaches the
  sweeper through ``callbacks.JobReturnWriter``. A SIGTERM to the sweep's process is passed on to the
  running jobs, which stop resumably; the sweep starts no more and exits with 143.
"""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hypermoe.job_processes import SIGTERM_EXIT_CODE, ForwardSigterm

from ._report import Failure, FailureReport, JobExitError, JobKilledError, report_of
from .callbacks import return_file

log = logging.getLogger(__name__)

_WRITER = "hydra_plugins.hypermoe_launcher.callbacks.JobReturnWriter"
# the sweep's Hydra overrides a job's process does not take: it is a single run in a given folder
_NOT_FOR_THE_JOB = re.compile(r"[~+]*hydra[./](mode|run\.dir|launcher|sweeper)([./=@]|$)")
_TAIL = 20  # lines of a job's output kept for its failure record
# Hydra's job_logging prefix, "[time][logger][LEVEL] - ", left out of the output line an exit's message quotes
_LOG_PREFIX = re.compile(r"^\[[^]]*\]\[[^]]*\]\[[A-Z]+\] - ")


class InProcessLauncher(BasicLauncher):
    """Hydra's basic launcher that tables the sweep's failed jobs after each batch (the project's default
    launcher). Hydra's callbacks have no end-of-batch hook, and the basic sweeper raises the first failure
    right after the batch, before ``on_multirun_end``: the table and the last words come from here."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.hydra_context is not None
        returns = super().launch(job_overrides, initial_job_idx)
        report = report_of(self.hydra_context)
        if report is not None:
            report.batch_ended(returns, range(initial_job_idx, initial_job_idx + len(returns)))
        return returns


@dataclass
class _Job:
    """One job of the isolated launcher and, once started, its process."""

    num: int
    overrides: list[str]
    dir: Path
    argv: list[str] = field(default_factory=list)
    result: Path | None = None  # the JSON its JobReturnWriter writes
    error: Exception | None = None  # its config does not compose: it does not start
    process: subprocess.Popen | None = None
    relay: threading.Thread | None = None
    output: deque = field(default_factory=lambda: deque(maxlen=_TAIL))
    started: float = 0.0


class IsolatedLauncher(Launcher):
    """Each job in a process of its own (``max_parallel`` at a time): a job that is killed, runs out of
    memory or exits non-zero is one failed job, and every job imports the code and composes its config
    afresh. The app must have been started as ``python <script>`` or ``python -m <module>``: each job
    runs that command with its overrides."""

    def __init__(self, max_parallel: int = 1) -> None:
        if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
            raise ValueError(f"hydra.launcher.max_parallel must be an integer >= 1, got {max_parallel!r}")
        self.max_parallel = max_parallel
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.report: FailureReport | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        self.report = _begin_batch(self.config, report_of(self.hydra_context) or self.report)
        command = _app_command()
        jobs = [self._job(num, list(o), command) for num, o in enumerate(job_overrides, start=initial_job_idx)]
        log.info(f"Launching {len(jobs)} jobs, each in a process of its own, {self.max_parallel} at a time")
        for job in jobs:
            log.info(f"\t#{job.num} : {' '.join(filter_overrides(job.overrides))}")
        ended = {job.num: self._failed(job, job.error) for job in jobs if job.error is not None}
        pending = deque(job for job in jobs if job.error is None)
        running: list[_Job] = []
        try:
            with ForwardSigterm() as stop:  # a SIGTERM stops the running jobs (resumably) and starts no more
                while (pending and not stop.stopped) or running:
                    while pending and len(running) < self.max_parallel and not stop.stopped:
                        running.append(self._start(pending.popleft()))
                        stop.started(running[-1].process)
                    done = [job for job in running if job.process.poll() is not None]
                    for job in done:
                        running.remove(job)
                        stop.ended(job.process)
                        ended[job.num] = self._end(job)
                    if not done:
                        time.sleep(0.1)
        finally:  # interrupted (Ctrl-C): no job outlives the sweep
            for job in running:
                job.process.kill()
                job.process.wait()
        ran = [job for job in jobs if job.num in ended]
        returns = [ended[job.num][0] for job in ran]
        self.report.batch_ended(returns, [job.num for job in ran])
        if stop.stopped:
            not_run = " ".join(f"#{job.num}" for job in pending) or "none"
            log.error(f"SIGTERM: the sweep stops; its running jobs were stopped, jobs not started: {not_run}")
            raise SystemExit(SIGTERM_EXIT_CODE)
        return returns

    def _job(self, num: int, overrides: list[str], command: list[str]) -> _Job:
        assert self.config is not None and self.hydra_context is not None
        job = _Job(num, overrides, Path(str(self.config.hydra.sweep.dir)).absolute() / str(num))
        try:  # composed here too: the job's folder, and a config error without starting a process
            sweep_config = _job_config(self.hydra_context, self.config, overrides, num)
            job.dir = _job_dir(sweep_config)
        except Exception as error:
            job.error = error
            return job
        job.result = return_file(job.dir, sweep_config.hydra.output_subdir)
        sweep_hydra = OmegaConf.to_container(self.config.hydra.overrides.hydra)
        job.argv = [
            *command,
            *overrides,
            *(o for o in sweep_hydra if not _NOT_FOR_THE_JOB.match(o)),
            "hydra.mode=RUN",
            f"hydra.run.dir={_quoted(str(job.dir))}",
            f"hydra.job.num={num}",  # what a multirun job's config says (hydra.sweep.subdir may use them)
            f"hydra.job.id={num}",
            f"++hydra.callbacks.hypermoe_job_return={{_target_:{_WRITER}}}",
        ]
        return job

    def _start(self, job: _Job) -> _Job:
        assert self.config is not None and job.result is not None
        job.dir.mkdir(parents=True, exist_ok=True)
        job.result.unlink(missing_ok=True)  # an earlier sweep's, into the same folder
        job.process = subprocess.Popen(
            job.argv, cwd=self.config.hydra.runtime.cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        )  # fmt: skip
        prefix = f"[#{job.num}] " if self.max_parallel > 1 else ""
        job.relay = threading.Thread(target=_relay, args=(job.process.stdout, prefix, job.output), daemon=True)
        job.relay.start()
        job.started = time.perf_counter()
        return job

    def _end(self, job: _Job) -> tuple[JobReturn, Failure | None]:
        assert job.process is not None and job.relay is not None and job.result is not None
        job.relay.join(timeout=10)  # a process the job started may still hold the pipe open
        code = job.process.returncode
        record = _read_json(job.result)
        if code == 0:
            ret = self._return(job, JobStatus.COMPLETED)
            ret.return_value = record.get("return_value") if record else None
            seconds = time.perf_counter() - job.started
            log.info(f"Job #{job.num} completed in {seconds:.0f} s, returning {ret.return_value!r}")
            self.report.job_ended(job.overrides, None)
            return ret, None
        output = list(job.output)
        if code < 0:
            return self._failed(job, JobKilledError(f"killed by {_signal_name(-code)}"), output=output)
        if record and record.get("status") == "FAILED":  # the job's exception, as the job reported it
            error = JobExitError(f"exit code {code}: {record['type']}: {record['message']}")
            return self._failed(job, error, record["type"], record["message"])
        last = f": {_LOG_PREFIX.sub('', output[-1])}" if output else ""
        return self._failed(job, JobExitError(f"exit code {code}{last}"), output=output)

    def _failed(
        self, job: _Job, error: Exception, type_name: str | None = None, message: str | None = None,
        output: list[str] | None = None,
    ) -> tuple[JobReturn, Failure]:  # fmt: skip
        ret = self._return(job, JobStatus.FAILED)
        ret.return_value = error
        failure = Failure(
            job.num, job.overrides, type_name or type(error).__name__, str(error) if message is None else message,
            str(job.dir), output or [],
        )  # fmt: skip
        self.report.job_ended(job.overrides, failure)
        return ret, failure

    def _return(self, job: _Job, status: JobStatus) -> JobReturn:
        """The job's JobReturn, with the configs its process saved in ``.hydra/`` where there are any."""
        assert self.config is not None
        ret = JobReturn(overrides=job.overrides, working_dir=self.config.hydra.runtime.cwd, status=status)
        ret.task_name = self.config.hydra.job.name
        saved = job.dir / (self.config.hydra.output_subdir or "")
        if self.config.hydra.output_subdir and (saved / "config.yaml").is_file():
            ret.cfg = OmegaConf.load(saved / "config.yaml")
            ret.hydra_cfg = OmegaConf.load(saved / "hydra.yaml")
        return ret


def _begin_batch(config: DictConfig, report: FailureReport | None) -> FailureReport:
    """What each launch of the isolated launcher does first: Hydra's globals and logging, the sweep folder,
    and the sweep's failure report (the ``FailedJobs`` callback's; without one, made on the first batch)."""
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return report or FailureReport(sweep_dir)


def _job_config(hydra_context: HydraContext, config: DictConfig, overrides: list[str], num: int) -> DictConfig:
    """The job's config as a multirun job sees it (what Hydra's basic launcher composes)."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = num
        sweep_config.hydra.job.num = num
    return sweep_config


def _job_dir(sweep_config: DictConfig) -> Path:
    """``hydra.sweep.dir/hydra.sweep.subdir``, resolved the way ``run_job`` resolves it."""
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(sweep_config)  # for ${hydra:...} in the folder names
    try:
        return (Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)).absolute()
    finally:
        HydraConfig.instance().cfg = saved


def _app_command() -> list[str]:
    """How this process was started (``python <script>`` or ``python -m <module>``) with Hydra's config flags."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    command = [sys.executable, "-m", spec.name] if spec else [sys.executable, os.path.abspath(sys.argv[0])]
    args, _ = get_args_parser().parse_known_args(sys.argv[1:])
    for flag in ("config_path", "config_name", "config_dir"):
        if getattr(args, flag) is not None:
            command.append(f"--{flag.replace('_', '-')}={getattr(args, flag)}")
    return command


def _quoted(value: str) -> str:
    """A string as a Hydra override value: quoted unless it is plain."""
    if re.fullmatch(r"[\w/.\-+@%]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _relay(stream: IO[str], prefix: str, tail: deque) -> None:
    """A job's output to this process's stdout, keeping its last lines."""
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()
        if line.strip():
            tail.append(line.rstrip())


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
