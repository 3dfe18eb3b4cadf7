"""``run_eval(cfg)``: re-test a checkpoint, rebuilding the model from the config inside it."""

import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hypermoe.train import build

log = logging.getLogger(__name__)


def load_run_info(ckpt_path: str) -> dict[str, Any]:
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r} is not a file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "hypermoe" not in checkpoint:
        raise ValueError(f"{path} was not written by hypermoe's train.py: it holds no run config")
    return checkpoint


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    checkpoint = load_run_info(cfg.ckpt_path)
    trained = OmegaConf.create(checkpoint["hypermoe"]["config"])
    if cfg.get("data") is not None:  # re-test on another data config
        trained.data = cfg.data
    trained.paths = cfg.paths
    data, module = build(trained)
    module.load_state_dict(checkpoint["state_dict"])
    trainer = instantiate(cfg.trainer, logger=False)
    results = trainer.validate(module, datamodule=data)[0]
    metrics = {
        "ckpt_path": str(cfg.ckpt_path),
        "task": f"{data.task.benchmark}/{data.task.name}",
        "trained_on": checkpoint["hypermoe"]["config"]["data"]["task"],
        "validation": {k: float(v) for k, v in results.items() if not k.endswith("_best")},
    }
    out = Path(cfg.paths.output_dir) / "eval_metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("validation: %s; wrote %s", metrics["validation"], out)
    return metrics
