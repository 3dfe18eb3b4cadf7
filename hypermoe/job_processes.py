"""A process that runs jobs as processes of their own (``run_grid.py``, the isolated launcher)
passes a SIGTERM on to them, so none outlives it."""

import signal
import subprocess
from typing import Any

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # what a shell or a scheduler reads as "killed by SIGTERM"


class ForwardSigterm:
    """Inside this block a SIGTERM to this process (``kill``, ``scancel``, a preemption) is sent
    on to every job process registered with ``started`` and not yet ``ended``: each stops as it
    would on its own SIGTERM (a training run saves its step and exits 143) instead of running on
    without its parent, and ``stopped`` tells the caller to start no more. The previous handler is
    restored on exit. Used from the main thread, where Python runs signal handlers."""

    def __init__(self) -> None:
        self.stopped = False
        self._running: set[subprocess.Popen] = set()
        self._previous: Any = None

    def started(self, process: subprocess.Popen) -> None:
        self._running.add(process)
        if self.stopped:  # started while the signal came in
            process.send_signal(signal.SIGTERM)

    def ended(self, process: subprocess.Popen) -> None:
        self._running.discard(process)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.stopped = True
        for process in list(self._running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def __enter__(self) -> "ForwardSigterm":
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._previous)
