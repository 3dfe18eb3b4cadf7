"""The Optuna sweeper (hydra-optuna-sweeper), with two changes. A search in which no trial completed
ends as any sweep with failed jobs ends: the failed trials listed, exit code 1. Optuna's own sweeper
asks its study for the best trial after the last one, which raises a ValueError with a traceback when
there is none, before the ``FailedJobs`` callback's last words. And a search whose study is kept in a
``storage`` goes on where it stopped when started again. ``conf/hparams_search/*.yaml`` select it
(``hydra.sweeper._target_``)."""

import logging
import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from ._report import report_of

log = logging.getLogger(__name__)
# Optuna imports alembic, which logs each of its plugins at INFO as it loads them: seven lines before
# every search. Set here, on import, since the sweeper's sampler imports Optuna before the sweeper is made.
logging.getLogger("alembic").setLevel(logging.WARNING)


class OptunaSweeper(Sweeper):
    """hydra-optuna-sweeper's ``OptunaSweeper`` with the same settings, imported when it is made (so
    this module loads where that plugin is not installed)."""

    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as Optuna

        self.optuna = Optuna(**settings)
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        if config.get("task_name") == "train":  # train.py: a search going the wrong way is refused before its trials
            _exit_on_a_wrong_target(config)
        self.optuna.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self._continue_stored_study()
        try:
            return self.optuna.sweep(arguments)
        except ValueError:  # optuna's "No trials are completed yet", from study.best_trial
            report = report_of(self.hydra_context) if self.hydra_context is not None else None
            if report is None or not report.failures or len(report.failures) < len(report.overrides):
                raise
            log.error("No trial of the search completed, so it has no best parameters.")
            sys.exit(report.last_words())

    def _continue_stored_study(self) -> None:
        """With a ``storage``, ``n_trials`` counts the study's completed trials, not this start's: a
        search started again after a stop (a preemption, a time limit) runs the trials it has left,
        where Optuna's sweeper would run ``n_trials`` more; a trial that failed (an error, out of
        memory) is run again. The sampler's generator is reseeded, or the seeded random trials that
        start a search would repeat the first start's settings."""
        import optuna

        search = self.optuna.sweeper
        if search.storage is None or search.study_name is None:  # an unnamed study is a new one each start
            return
        try:
            study = optuna.load_study(study_name=search.study_name, storage=search.storage)
        except KeyError:  # not in the storage yet: the first start
            return
        trials = study.get_trials(deepcopy=False)
        if not trials:
            return
        completed = sum(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
        left = max(search.n_trials - completed, 0)
        log.info(
            "Study %r has %d completed trials of n_trials=%d: running %d more", search.study_name, completed,
            search.n_trials, left,
        )  # fmt: skip
        search.n_trials = left
        if hasattr(search.sampler, "reseed_rng"):  # a grid sampler draws nothing at random
            search.sampler.reseed_rng()


def _exit_on_a_wrong_target(config: DictConfig) -> None:
    """What ``check_search_target`` refuses ends the search as a single run's configuration error ends.
    Imported here: they import torch and Lightning, and Hydra imports this module whenever it scans plugins."""
    from hypermoe.cli import EXIT_CODES
    from hypermoe.errors import ConfigError
    from hypermoe.validation import check_search_target

    try:
        check_search_target(config)
    except ConfigError as error:
        log.error("invalid configuration: %s", error)
        sys.exit(EXIT_CODES[ConfigError])
