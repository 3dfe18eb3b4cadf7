"""A Hydra app whose every job does what ``action`` says, for the launcher tests (tests/test_multirun_failures.py):
``return`` writes ``done.txt`` into its output folder and returns ``value``, ``raise`` raises a ValueError,
``kill`` sends itself SIGKILL (as the OOM killer would), ``sigterm_sweep`` sends the process that started it
SIGTERM (a scheduler stopping the sweep) and waits for the SIGTERM the sweep should pass on, then writes
``stopped.txt`` and exits with 143."""

import os
import signal
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=".", config_name="job_app")
def main(cfg: DictConfig) -> float:
    if cfg.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if cfg.action == "sigterm_sweep":
        stopped = Path(HydraConfig.get().runtime.output_dir) / "stopped.txt"
        signal.signal(signal.SIGTERM, lambda *_: (stopped.write_text("SIGTERM\n"), sys.exit(143)))
        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(60)
        raise RuntimeError("the sweep did not pass its SIGTERM on within 60 s")
    if cfg.action == "raise":
        raise ValueError(f"job asked to fail (value={cfg.value})")
    (Path(HydraConfig.get().runtime.output_dir) / "done.txt").write_text(f"{cfg.value}\n")
    return float(cfg.value)


if __name__ == "__main__":
    main()
