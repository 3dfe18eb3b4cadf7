"""``run_eval(cfg)``: re-test a checkpoint, rebuilding the model from the config inside it."""

import json
import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hypermoe.callbacks.expert_load import ExpertLoad
from hypermoe.errors import ConfigError
from hypermoe.train import build, finite_or_null
from hypermoe.validation import load_checkpoint

log = logging.getLogger(__name__)


def rebuild(cfg: DictConfig) -> tuple[dict[str, Any], Any, Any]:
    """The checkpoint at ``cfg.ckpt_path``, and its DataModule and LightningModule rebuilt from the
    config it holds (on ``cfg.data`` where given) with its trained weights loaded."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError(
            "ckpt_path is required: the checkpoint to load, e.g. ckpt_path=outputs/.../checkpoints/last.ckpt"
        )
    checkpoint = load_checkpoint(cfg.ckpt_path)
    trained = OmegaConf.create(checkpoint["hypermoe"]["config"])
    if cfg.get("data") is not None:  # re-test on another data config
        trained.data = cfg.data
    trained.paths = cfg.paths
    trained.data.data_dir = cfg.paths.data_dir  # the checkpoint froze the training machine's paths
    if trained.backbone.get("tokenizer_fallback"):
        folder = Path(trained.backbone.tokenizer_fallback).name  # t5, gpt2
        trained.backbone.tokenizer_fallback = str(Path(cfg.paths.tokenizers_dir) / folder)
    data, module = build(trained, checkpoint["hypermoe"].get("vocabulary"))  # a character model's own
    trained_on = checkpoint["hypermoe"]["task"]
    if trained_on["signature"] != data.task.signature():
        raise ConfigError(
            f"the checkpoint's head was trained on {trained_on['name']} {trained_on['signature']}; "
            f"{data.task.qualified_name} needs {data.task.signature()}: it cannot score that task"
        )
    module.load_state_dict(checkpoint["state_dict"])
    return checkpoint, data, module


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    checkpoint, data, module = rebuild(cfg)
    trained_on = checkpoint["hypermoe"]["task"]
    expert_load = ExpertLoad()
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[expert_load])
    results = trainer.validate(module, datamodule=data)[0]
    metrics = {
        "ckpt_path": str(cfg.ckpt_path),
        "task": data.task.qualified_name,
        "trained_on": trained_on["name"],
        "validation": {k: float(v) for k, v in results.items() if not k.endswith("_best")},
        "expert_load": expert_load.expert_load,  # per MoE layer, each expert's share of the tokens it routed
    }
    out = Path(cfg.paths.output_dir) / "eval_metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite_or_null(metrics), indent=2, allow_nan=False) + "\n")  # strict JSON
    log.info("validation: %s; wrote %s", metrics["validation"], out)
    return metrics
