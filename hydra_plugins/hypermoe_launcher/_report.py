"""The failed jobs of one sweep: each logged when it ends, all of them tabled after every batch that
had one and kept in ``<sweep dir>/failures.yaml``.

(A module whose name starts with ``_``: Hydra's plugin scan does not re-execute it, so its classes
stay the same objects for every module that imports them.)
"""

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

FAILURES_FILE = "failures.yaml"
_CELL = 160  # characters of an error message in the logged table (the file keeps all of it)


class JobFailedError(CompactHydraException):
    """What a failed job's JobReturn raises to the sweeper: the job's error, how many jobs failed and
    where they are listed. Compact: Hydra prints the message alone (the job's traceback is already
    in the log), and exits with code 1."""


class JobKilledError(RuntimeError):
    """A job's process ended by a signal (SIGKILL: the OOM killer, or ``kill -9``)."""


class JobTerminatedError(RuntimeError):
    """The sweep's own process got SIGTERM during an in-process job (scancel, a preemption, ``kill``):
    Lightning stopped the job early, and no later job may start."""

    MESSAGE = "the sweep's process got SIGTERM: Lightning stopped the job early, and the sweep stops"


class JobExitError(RuntimeError):
    """A job's process exited with a non-zero code without reporting an exception."""


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
        """Counts a job; logs a failure at once (with the traceback of an exception raised in this process)."""
        self.overrides.append(list(overrides))
        if failure is None:
            return
        self.failures.append(failure)
        output = "".join(f"\n\t| {line}" for line in failure.output)
        log.error(
            "Job #%d failed: %s: %s\n\toverrides: %s\n\tfolder: %s%s",
            failure.job, failure.type, failure.message, " ".join(failure.overrides), failure.dir, output,
            exc_info=error,
        )  # fmt: skip

    def batch_ended(self, returns: Sequence[JobReturn], failures: Sequence[Failure | None]) -> None:
        """Once the sweep has failures, after every batch: rewrites the file (the job count grows); after
        a batch with failures: logs the table and makes each failed job's return value a JobFailedError
        that says how many jobs failed and where they are listed."""
        if not self.failures:
            return
        OmegaConf.save(
            OmegaConf.create({"jobs": len(self.overrides), "failed": len(self.failures),
                              "failures": [_record(failure) for failure in self.failures]}),
            self.path,
        )  # fmt: skip
        if not any(failures):
            return
        log.error("%s:\n%s", self.headline, self.table())
        for ret, failure in zip(returns, failures, strict=True):
            if failure is not None:
                cause = ret._return_value if isinstance(ret._return_value, BaseException) else None
                error = JobFailedError(f"Job #{failure.job} failed: {failure.type}: {failure.message}\n{self.headline}")
                error.__cause__ = cause
                ret.return_value = error

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


def _record(failure: Failure) -> dict:
    record = asdict(failure)
    if not record["output"]:
        del record["output"]
    return record
