"""``run_eval(cfg)``: re-test a checkpoint, rebuilding the model from the config inside it, on
the validation split (its metrics), the test split (a benchmark submission file) or, with an RTE
or MNLI model, a diagnostic set (its submission file and scores)."""

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hypermoe.callbacks.expert_load import ExpertLoad
from hypermoe.callbacks.progress import progress_bar
from hypermoe.checkpoint_checks import load_checkpoint
from hypermoe.config import to_container
from hypermoe.data.diagnostics import DIAGNOSTICS
from hypermoe.errors import ConfigError
from hypermoe.predict import predict_diagnostic, predict_test_split
from hypermoe.train import build, finite_or_null
from hypermoe.validation import check_data_sizes, check_eval_trainer, instantiate_setting

log = logging.getLogger(__name__)

SPLITS = ("validation", "test", *DIAGNOSTICS)


def rebuild(cfg: DictConfig) -> tuple[dict[str, Any], Any, Any]:
    """The checkpoint at ``cfg.ckpt_path``, and its DataModule and LightningModule rebuilt from the
    config it holds (on ``cfg.data`` where given) with its trained weights loaded."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError(
            "ckpt_path is required: the checkpoint to load, e.g. ckpt_path=outputs/.../checkpoints/last.ckpt"
        )
    checkpoint = load_checkpoint(cfg.ckpt_path)
    trained = OmegaConf.create(checkpoint["hypermoe"]["config"])
    if cfg.get("data"):  # re-test on another data config
        trained_data = to_container(trained.data)
        # data=<group> brings a whole config (with its _target_); +data.KEY=VALUE alone changes that key
        trained.data = cfg.data if "_target_" in cfg.data else OmegaConf.merge(trained.data, cfg.data)
        check_data_sizes(trained.data)  # resolved against the checkpoint's config (its backbone's recipe)
        _warn_of_changes(trained_data, to_container(trained.data))
    trained.paths = cfg.paths
    trained.data.data_dir = cfg.paths.data_dir  # the checkpoint froze the training machine's paths
    if trained.backbone.get("tokenizer_fallback"):
        folder = Path(trained.backbone.tokenizer_fallback).name  # t5, gpt2, all-MiniLM-L6-v2
        trained.backbone.tokenizer_fallback = str(Path(cfg.paths.tokenizers_dir) / folder)
    data, module = build(trained, checkpoint["hypermoe"].get("vocabulary"))  # a character model's own
    trained_on = checkpoint["hypermoe"]["task"]
    if trained_on["signature"] != data.task.signature():
        raise ConfigError(
            f"the checkpoint's head was trained on {trained_on['name']} {trained_on['signature']}; "
            f"{data.task.qualified_name} needs {data.task.signature()}: it cannot score that task"
        )
    module.load_state_dict(checkpoint["state_dict"])
    if "majority_target" in checkpoint["hypermoe"]:  # what a text-to-text prediction naming no label is written as
        module.run_info["majority_target"] = checkpoint["hypermoe"]["majority_target"]
    return checkpoint, data, module


def _warn_of_changes(trained: dict[str, Any], given: dict[str, Any]) -> None:
    """Names each data setting that differs from the checkpoint's: ``data=`` brings its group's whole
    config (its recipe's max_length, batch sizes, ...), not only the keys typed after it."""
    changed = [
        f"data.{key}={given.get(key)!r} (trained with {trained.get(key)!r})"
        for key in sorted(set(trained) | set(given))
        if key != "data_dir" and trained.get(key) != given.get(key)
    ]
    if changed:
        log.warning("evaluating with data settings other than the checkpoint's: %s", "; ".join(changed))


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    split = cfg.get("split", "validation")
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not one of {list(SPLITS)}")
    check_eval_trainer(cfg.trainer, split)
    checkpoint, data, module = rebuild(cfg)
    trained_on = checkpoint["hypermoe"]["task"]
    expert_load = ExpertLoad()  # eval composes no conf/callbacks: it attaches the one it reports
    callbacks = [expert_load]
    if cfg.trainer.get("enable_progress_bar", True):  # no bar in a log file: the result is logged below
        callbacks.append(progress_bar(every_n_steps=1))  # the interval of training steps: eval takes none
    trainer = instantiate_setting("trainer", cfg.trainer, logger=False, callbacks=callbacks)
    output_dir = Path(cfg.paths.output_dir)
    metrics = {"ckpt_path": str(cfg.ckpt_path), "task": data.task.qualified_name, "trained_on": trained_on["name"]}
    used = module.run_info["config"]["data"]  # the config the model was rebuilt with, this data included
    metrics["data"] = {key: value for key, value in used.items() if key != "data_dir"}
    if split == "validation":
        results = trainer.validate(module, datamodule=data)[0]
        metrics["validation"] = {k: float(v) for k, v in results.items() if not k.endswith("_best")}
        metrics["expert_load"] = expert_load.expert_load  # per MoE layer, each expert's share of the tokens it routed
    elif split == "test":
        metrics[split] = predict_test_split(trainer, module, data, output_dir)
    else:
        metrics[split] = predict_diagnostic(trainer, module, data, split, output_dir)
    out = output_dir / "eval_metrics.json"
    if trainer.is_global_zero:  # under DDP every process holds the same (synced) metrics: one writes them
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(finite_or_null(metrics), indent=2, allow_nan=False) + "\n")  # strict JSON
        log.info("%s: %s; wrote %s", split, metrics[split], out)
    return metrics
