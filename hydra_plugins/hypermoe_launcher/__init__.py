"""The project's Hydra launchers: a multirun carries on past failed jobs, lists them (job, overrides,
error, folder) in ``<sweep dir>/failures.yaml`` and ends with a non-zero exit code.

``hydra/launcher=inprocess`` (the project's default) runs the jobs one after another in the sweep's
process, like Hydra's basic launcher; ``hydra/launcher=isolated`` runs each job in a process of its
own, so a job killed by a signal (the OOM killer's SIGKILL) is one failed job, not the end of the sweep.
"""
