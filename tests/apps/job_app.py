"""A Hydra app whose every job does what ``action`` says, for the launcher tests (tests/test_multirun_failures.py):
``return`` writes ``done.txt`` into its output folder and returns ``value``, ``raise`` raises a ValueError,
``kill`` sends itself SIGKILL (as the OOM killer would)."""

import os
import signal
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=".", config_name="job_app")
def main(cfg: DictConfig) -> float:
    if cfg.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if cfg.action == "raise":
        raise ValueError(f"job asked to fail (value={cfg.value})")
    (Path(HydraConfig.get().runtime.output_dir) / "done.txt").write_text(f"{cfg.value}\n")
    return float(cfg.value)


if __name__ == "__main__":
    main()
