"""The failed jobs of one sweep: the Hydra callback ``FailedJobs`` logs each one when it ends, keeps
them all in ``<sweep dir>/failures.yaml`` and ends a sweep that had some with a non-zero exit code;
the launchers table them after every batch that had one (Hydra's callbacks have no end-of-batch hook).

(A module whose name starts with ``_``: Hydra's plugin scan does not re-execute it, so its classes
stay the same objects for every module that imports them.)
"""

import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

FAILURES_FILE = "failures.yaml"
_CELL = 160  # characters of an error message in the logged table (the file keeps all of it)


class JobFailedError(CompactHydraException):
    """What a failed job's JobReturn raises to the sweeper: the job's error, how many jobs failed and
    where they are listed. Compact: Hydra prints the message alone (the failure was logged when the
    job ended, with its traceback where the error was not an expected one), and exits with code 1."""


class JobKilledError(RuntimeError):
    """A job's process ended by a signal (SIGKILL: the OOM killer, or ``kill -9``)."""


class JobTerminatedError(RuntimeError):
    """The sweep's own process got SIGTERM during an in-process job (scancel, a preemption, ``kill``):
    Lightning stopped the job early, and no later job may start. The job raises it in place of
    Lightning's ``SIGTERMException`` (``hypermoe.cli.exit_on_expected_errors``): that one is a
    ``SystemExit``, which Hydra's ``run_job`` passes on without calling the callbacks' ``on_job_end``."""

    MESSAGE = "the sweep's process got SIGTERM: Lightning stopped the job early, and the sweep stops"


class JobExitError(RuntimeError):
    """A job's process (isolated launcher) exited with a non-zero code."""


@dataclass
class Failure:
    job: int  # hydra.job.num
    overrides: list[str]
    type: str  # the exception's class name
    message: str
    dir: str  # the job's output folder
    output: list[str] = field(default_factory=list)  # the last lines the job's process printed (isolated)


class FailureReport:
    """The failures of the sweep writing into ``sweep_dir``, across the launcher's batches (the Optuna
    sweeper launches one batch per ``n_jobs`` trials)."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.path = Path(sweep_dir).absolute() / FAILURES_FILE
        self.path.unlink(missing_ok=True)  # left by an earlier sweep into the same folder
        self.overrides: list[list[str]] = []  # every job's, to table only the overrides that differ
        self.failures: list[Failure] = []

    @property
    def headline(self) -> str:
        return f"{len(self.failures)} of {len(self.overrides)} jobs failed; they are listed in {self.path}"

    def job_ended(self, overrides: Sequence[str], failure: Failure | None, error: BaseException | None = None) -> None:
        """Counts a job; logs a failure at once (with the traceback of an unexpected exception raised in
        this process: an expected one's message says it all, as a single run prints it alone); once
        the sweep has failures, rewrites the file (the job count grows)."""
        self.overrides.append(list(overrides))
        if failure is not None:
            self.failures.append(failure)
            output = "".join(f"\n\t| {line}" for line in failure.output)
            log.error(
                "Job #%d failed: %s: %s\n\toverrides: %s\n\tfolder: %s%s",
                failure.job, failure.type, failure.message, " ".join(failure.overrides), failure.dir, output,
                exc_info=None if _expected(error) else error,
            )  # fmt: skip
        if self.failures:
            OmegaConf.save(
                OmegaConf.create({"jobs": len(self.overrides), "failed": len(self.failures),
                                  "failures": [_record(failure) for failure in self.failures]}),
                self.path,
            )  # fmt: skip

    def batch_ended(self, returns: Sequence[JobReturn], nums: Sequence[int]) -> None:
        """After a batch with failures: logs the table and makes each failed job's return value a
        JobFailedError that says how many jobs failed and where they are listed. ``nums``: the job
        numbers of ``returns``."""
        failed = {failure.job: failure for failure in self.failures}
        batch = [(ret, failed[num]) for ret, num in zip(returns, nums, strict=True) if num in failed]
        if not batch:
            return
        log.error("%s:\n%s", self.headline, self.table())
        for ret, failure in batch:
            cause = ret._return_value if isinstance(ret._return_value, BaseException) else None
            error = JobFailedError(f"Job #{failure.job} failed: {failure.type}: {failure.message}\n{self.headline}")
            error.__cause__ = cause
            ret.return_value = error

    def last_words(self) -> str:
        """What a sweep with failed jobs ends with: how many failed, where they are listed, and a line each."""
        lines = [f"  #{f.job}  {f.type}: {f.message}".splitlines()[0] + f"  ({f.dir})" for f in self.failures]
        return "\n".join([f"{self.headline}:", *lines])

    def table(self) -> str:
        """One row per failed job: number, the overrides not all jobs share, error, folder."""
        shared = set.intersection(*(set(o) for o in self.overrides)) if len(self.overrides) > 1 else set()
        rows = [("job", "overrides", "error", "folder")]
        for failure in self.failures:
            overrides = [o for o in failure.overrides if o not in shared] or failure.overrides
            error = f"{failure.type}: {failure.message}".strip().splitlines()[0]
            error = error if len(error) <= _CELL else error[: _CELL - 3] + "..."
            rows.append((f"#{failure.job}", " ".join(overrides), error, failure.dir))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]  # the folder, last, is not padded
        return "\n".join("  " + "  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]) for row in rows)


def _expected(error: BaseException | None) -> bool:
    """An error the entry points end a single run on with its message alone (``hypermoe.cli``)."""
    from hypermoe.cli import EXIT_CODES  # here: hypermoe.cli imports this module

    return isinstance(error, (*EXIT_CODES, JobTerminatedError))


def _record(failure: Failure) -> dict:
    record = asdict(failure)
    if not record["output"]:
        del record["output"]
    return record


class FailedJobs(Callback):
    """The Hydra callback that keeps a multirun's ``FailureReport``: records every job as it ends (Hydra's
    ``run_job`` hands a failed job's exception to ``on_job_end``), stops the sweep when a job was
    stopped by SIGTERM (exit code 143), and ends a sweep whose jobs failed with exit code 1, naming how
    many failed and where they are listed. That last step is needed where the sweeper carries on past
    failed jobs (Optuna with ``max_failure_rate``); Hydra's basic sweeper already raises the first
    failure when a batch has ended, and ``on_multirun_end`` does not run. A callback's exception would
    only be warned about: ``sys.exit`` is what ends the process."""

    def __init__(self) -> None:
        self.report: FailureReport | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.report = FailureReport(str(config.hydra.sweep.dir))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.report is None or config.hydra.mode != RunMode.MULTIRUN:  # a single run (an isolated job's process)
            return
        num = config.hydra.job.num
        if job_return.status != JobStatus.FAILED:
            self.report.job_ended(job_return.overrides, None)
            return
        error = job_return._return_value  # the property would raise it
        folder = str(config.hydra.runtime.output_dir)
        failure = Failure(num, list(job_return.overrides), type(error).__name__, str(error), folder)
        self.report.job_ended(job_return.overrides, failure, error)
        if isinstance(error, JobTerminatedError):
            log.error("SIGTERM during job #%d: the sweep stops; the jobs after it did not run", num)
            raise SystemExit(128 + signal.SIGTERM)  # = hypermoe.job_processes.SIGTERM_EXIT_CODE

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.report is not None and self.report.failures:
            sys.exit(self.report.last_words())


def report_of(hydra_context: HydraContext) -> FailureReport | None:
    """The sweep's failure report, kept by its ``FailedJobs`` callback (None without one)."""
    callbacks = hydra_context.callbacks.callbacks if hydra_context.callbacks is not None else []
    return next((c.report for c in callbacks if isinstance(c, FailedJobs)), None)
