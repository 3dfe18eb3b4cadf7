"""The project's multirun plumbing around Hydra's: the Hydra callback ``FailedJobs`` logs each failed job
when it ends and lists the failures (job, overrides, error, folder) in ``<sweep dir>/failures.yaml``, and a
sweep with failed jobs ends with a non-zero exit code.

``hydra/launcher=inprocess`` (the project's default) is Hydra's basic launcher, jobs one after another
in the sweep's process, plus the table of failed jobs after each batch; ``hydra/launcher=isolated`` runs
each job in a process of its own, so a job killed by a signal (the OOM killer's SIGKILL) is one failed
job, not the end of the sweep.
"""
