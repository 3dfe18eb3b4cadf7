"""The Optuna sweeper (hydra-optuna-sweeper), ending a search in which no trial completed as any sweep
with failed jobs ends: the failed trials listed, exit code 1. Optuna's own sweeper asks its study for the
best trial after the last one, which raises a ValueError with a traceback when there is none, before the
``FailedJobs`` callback's last words. ``conf/hparams_search/*.yaml`` select it (``hydra.sweeper._target_``)."""

import logging
import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from ._report import report_of

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    """hydra-optuna-sweeper's ``OptunaSweeper`` with the same settings, imported when it is made (so
    this module loads where that plugin is not installed)."""

    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as Optuna

        self.optuna = Optuna(**settings)
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.optuna.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        try:
            return self.optuna.sweep(arguments)
        except ValueError:  # optuna's "No trials are completed yet", from study.best_trial
            report = report_of(self.hydra_context) if self.hydra_context is not None else None
            if report is None or not report.failures or len(report.failures) < len(report.overrides):
                raise
            log.error("No trial of the search completed, so it has no best parameters.")
            sys.exit(report.last_words())
