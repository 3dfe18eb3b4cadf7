"""How the entry points end on the errors they expect: one readable message and an exit code
for each kind, instead of a traceback."""

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException

from hydra_plugins.hypermoe_launcher._report import JobTerminatedError
from hypermoe.data.readers import DataError
from hypermoe.data.sources import DataUnavailable
from hypermoe.errors import ConfigError, NonFiniteLossError, NoResultError
from hypermoe.job_processes import SIGTERM_EXIT_CODE

log = logging.getLogger(__name__)

# exit code -> what the message is about
EXIT_CODES = {ConfigError: 2, DataError: 3, DataUnavailable: 3, NonFiniteLossError: 4, NoResultError: 5}
_KINDS = {ConfigError: "invalid configuration", DataError: "bad data", DataUnavailable: "data not found",
          NonFiniteLossError: "training diverged", NoResultError: "no result"}  # fmt: skip
SIGINT_EXIT_CODE = 128 + signal.SIGINT  # and as "stopped by Ctrl-C"


class CtrlCAsSigterm:
    """Inside this block Ctrl-C (SIGINT) stops a run as SIGTERM does: the signal is passed on as
    SIGTERM, so Lightning ends training after the current step and the run saves that step
    (``LastCheckpoint``) and says how to resume. ``pressed`` tells the two apart afterwards. A
    second Ctrl-C while it stops is ignored. Lightning's own Ctrl-C handling stops at once,
    saves nothing and exits with 1."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if not self.pressed:
            self.pressed = True
            os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self) -> "CtrlCAsSigterm":
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


@contextmanager
def exit_on_expected_errors() -> Iterator[None]:
    """Around an entry point's work. In a single run an expected error ends the process with its
    message (on the console and in the run's log file) and its exit code, and a run stopped by
    SIGTERM with 143; in a multirun both propagate (the stop as a ``JobTerminatedError``), so the
    sweep's ``FailedJobs`` callback records the job as failed and, after a SIGTERM, stops the sweep."""
    try:
        yield
    except tuple(EXIT_CODES) as error:
        if _in_multirun():
            raise
        kind = next(cls for cls in EXIT_CODES if isinstance(error, cls))
        log.error("%s: %s", _KINDS[kind], error)
        sys.exit(EXIT_CODES[kind])
    except SIGTERMException as stop:  # a SystemExit without a code: the process would end with 0, as if it had finished
        if _in_multirun():  # an exception, which Hydra's run_job hands to the callbacks, where a SystemExit passes
            raise JobTerminatedError(JobTerminatedError.MESSAGE) from stop
        sys.exit(getattr(stop, "exit_code", SIGTERM_EXIT_CODE))


def _in_multirun() -> bool:
    """In a multirun the sweep records the job's failure and decides about the sweep."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
