"""``run(cfg)``: build data, model and trainer from the config, train, and report metrics."""

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from hypermoe.backbones.classifier import build_classifier
from hypermoe.config import git_revision, to_container
from hypermoe.lit_module import MoELitModule
from hypermoe.params import parameter_counts

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, MoELitModule]:
    """The DataModule and the LightningModule a config describes (shared with eval)."""
    data = instantiate(cfg.data)
    model = to_container(cfg.model)
    coefficients = model.pop("aux_loss_coefficients")
    net, tokenizer = build_classifier(
        to_container(cfg.backbone), model, data.task.kind, data.task.num_labels, data.task.num_spans
    )
    data.set_tokenizer(tokenizer)
    task = {"name": data.task.qualified_name, "signature": data.task.signature()}
    run_info = {"config": to_container(cfg), "seed": cfg.seed, "git": git_revision(), "task": task}
    module = MoELitModule(
        net,
        data.task,
        coefficients,
        optimizer=instantiate(cfg.optimizer),
        warmup_ratio=cfg.scheduler.warmup_ratio,
        routing_log_every=cfg.routing_log_every,
        run_info=run_info,
    )
    return data, module


def _callbacks(cfg: DictConfig, main_metric: str, has_logger: bool) -> list[pl.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint):
            if callback.monitor == "auto":
                callback.monitor = f"val/{main_metric}"  # the task's selection metric
            if cfg.get("ckpt_path"):
                # a resumed run keeps checkpointing where it started, so its best-k record
                # (which Lightning drops when the folder changes) carries on
                callback.dirpath = str(Path(cfg.ckpt_path).resolve().parent)
    # the learning-rate monitor has nowhere to write without a logger (logger=none)
    return [c for c in callbacks if has_logger or not isinstance(c, LearningRateMonitor)]


def _loggers(cfg: DictConfig, resumed_wandb_id: str | None) -> list:
    """The configured loggers; a resumed run logs into the W&B run it started."""
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        if logger_cfg is None:
            continue
        overrides = {}
        if resumed_wandb_id and logger_cfg.get("_target_", "").endswith("WandbLogger") and not logger_cfg.get("id"):
            overrides = {"id": resumed_wandb_id, "resume": "must"}
        loggers.append(instantiate(logger_cfg, **overrides))
    return loggers


def load_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """A checkpoint written by train.py, loaded without unpickling code."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r} is not a file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "hypermoe" not in checkpoint:
        raise ValueError(f"{path} was not written by hypermoe's train.py: it holds no run config")
    return checkpoint


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured; write and return ``metrics.json``'s content."""
    start = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # .hydra/config.yaml keeps the interpolations; this is what they resolved to
    OmegaConf.save(cfg, output_dir / "resolved_config.yaml", resolve=True)
    data, module = build(cfg)
    resumed = load_checkpoint(cfg.ckpt_path)["hypermoe"] if cfg.get("ckpt_path") else {}
    loggers: list = []
    try:  # from the first logger on, so a failing job still finishes its W&B run
        loggers = _loggers(cfg, resumed.get("wandb_id"))
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                module.run_info["wandb_id"] = logger.experiment.id  # checkpoints carry it for resuming
        callbacks = _callbacks(cfg, data.task.main_metric, bool(loggers))
        trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        counts = parameter_counts(module.net)
        log.info("parameters: %s", counts)
        for logger in loggers:
            logger.log_hyperparams({"params": counts, **module.run_info["config"]})
        trainer.fit(module, datamodule=data, ckpt_path=cfg.get("ckpt_path"))
        metrics = {
            "task": data.task.qualified_name,
            "model": cfg.model.variant,
            "seed": cfg.seed,
            "final": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            "best": {name: float(module.val_best[name].compute()) for name in data.task.metrics},
            "main_metric": data.task.main_metric,
            "params": counts,
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "wall_seconds": round(time.perf_counter() - start, 1),
            "git": module.run_info["git"],
        }
        if trainer.is_global_zero:
            out = output_dir / "metrics.json"
            out.write_text(json.dumps(metrics, indent=2) + "\n")
            log.info("validation: %s (best %s); wrote %s", metrics["final"], metrics["best"], out)
        return metrics
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            wandb.finish()  # one W&B run per job, also in in-process multiruns and on failure
