"""hypermoe.job_processes: a SIGTERM to a process that runs jobs is passed on to the jobs."""

import os
import signal
import subprocess
import sys

from hypermoe.job_processes import ForwardSigterm

# a job that exits 143 on SIGTERM after saying so, as a training run stops resumably
JOB = [sys.executable, "-c", "import signal, sys, time\n"
       "signal.signal(signal.SIGTERM, lambda *_: (print('stopped', flush=True), sys.exit(143)))\n"
       "print('ready', flush=True)\ntime.sleep(60)"]  # fmt: skip


def _start() -> subprocess.Popen:
    process = subprocess.Popen(JOB, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"  # its handler is in place
    return process


def test_a_sigterm_reaches_every_running_job_and_the_handler_is_restored_after():
    before = signal.getsignal(signal.SIGTERM)
    with ForwardSigterm() as stop:
        running, done = _start(), _start()
        stop.started(running)
        stop.started(done)
        stop.ended(done)  # ended before the signal: not signalled again
        done.kill()
        os.kill(os.getpid(), signal.SIGTERM)  # handled here, not fatal
        assert stop.stopped
        assert running.wait(timeout=30) == 143 and running.stdout.read() == "stopped\n"
        late = _start()  # started as the signal came in: it gets one too
        stop.started(late)
        assert late.wait(timeout=30) == 143
    assert signal.getsignal(signal.SIGTERM) == before
    for process in (running, done, late):
        process.stdout.close()
