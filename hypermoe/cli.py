"""How the entry points end on the errors they expect: one readable message and an exit code
for each kind, instead of a traceback."""

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from hypermoe.data.readers import DataError
from hypermoe.data.sources import DataUnavailable
from hypermoe.errors import ConfigError, NonFiniteLossError

log = logging.getLogger(__name__)

# exit code -> what the message is about
EXIT_CODES = {ConfigError: 2, DataError: 3, DataUnavailable: 3, NonFiniteLossError: 4}
_KINDS = {ConfigError: "invalid configuration", DataError: "bad data", DataUnavailable: "data not found",
          NonFiniteLossError: "training diverged"}  # fmt: skip


@contextmanager
def exit_on_expected_errors() -> Iterator[None]:
    """Around an entry point's work. In a single run an expected error ends the process with its
    message (on the console and in the run's log file) and its exit code; in a multirun it
    propagates, so the launcher records the job as failed and runs the others."""
    try:
        yield
    except tuple(EXIT_CODES) as error:
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        kind = next(cls for cls in EXIT_CODES if isinstance(error, cls))
        log.error("%s: %s", _KINDS[kind], error)
        sys.exit(EXIT_CODES[kind])
