"""Hydra callbacks of the launchers: ``FailedJobs``, which records a multirun's failed jobs, and the
job-side half of the isolated launcher."""

import json
import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ._report import FailedJobs  # noqa: F401  (hydra.callbacks' target: hydra_plugins.hypermoe_launcher.callbacks.FailedJobs)

log = logging.getLogger(__name__)

RETURN_FILE = "job_return.json"


def return_file(output_dir: str | Path, output_subdir: str | None) -> Path:
    """Where a job run by the isolated launcher leaves its status and return value: beside ``.hydra/config.yaml``."""
    return Path(output_dir) / (output_subdir or "") / RETURN_FILE


class JobReturnWriter(Callback):
    """Added by the isolated launcher to each job's process: writes the job's return value (what a sweeper
    such as Optuna optimises), or the exception it raised, as JSON for the launcher to read back."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        path = return_file(config.hydra.runtime.output_dir, config.hydra.output_subdir)
        path.parent.mkdir(parents=True, exist_ok=True)
        if job_return.status == JobStatus.COMPLETED:
            try:
                text = json.dumps({"status": "COMPLETED", "return_value": job_return.return_value}, default=_plain)
            except (TypeError, ValueError) as error:
                log.warning("The job's return value is not JSON (%s): the sweeper gets None", error)
                text = json.dumps({"status": "COMPLETED", "return_value": None})
        else:
            error = job_return._return_value  # the property would raise it
            text = json.dumps({
                "status": "FAILED", "type": type(error).__name__, "message": str(error),
                "traceback": "".join(traceback.format_exception(error)),
            })  # fmt: skip
        path.write_text(text + "\n")


def _plain(value: Any) -> Any:
    """numpy and torch scalars and arrays as Python numbers and lists."""
    for method in ("item", "tolist"):
        try:
            return getattr(value, method)()
        except (AttributeError, TypeError, ValueError, RuntimeError):
            continue
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
