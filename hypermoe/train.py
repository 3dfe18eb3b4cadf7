"""``run(cfg)``: build data, model and trainer from the config, train, and report metrics."""

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from hypermoe.backbones.causal_lm import build_causal_lm
from hypermoe.backbones.classifier import build_classifier
from hypermoe.backbones.seq2seq import build_seq2seq
from hypermoe.callbacks.expert_load import ExpertLoad
from hypermoe.checkpoint_checks import (
    check_checkpoint_matches,
    check_resume_settings,
    check_resume_world_size,
    ensure_checkpoint_folders,
    load_checkpoint,
)
from hypermoe.checkpointing import AtomicCheckpointIO, last_saved_checkpoint, remove_checkpoints
from hypermoe.cli import SIGINT_EXIT_CODE, SIGTERM_EXIT_CODE, CtrlCAsSigterm
from hypermoe.config import config_choice, git_revision, to_container
from hypermoe.data.characters import CharVocabulary
from hypermoe.data.datamodule import TaskDataModule
from hypermoe.data.lm import LMDataModule
from hypermoe.data.seq2seq import Seq2SeqDataModule
from hypermoe.errors import ConfigError, NoResultError
from hypermoe.lit_module import CausalLMLitModule, ClassifierLitModule, MoELitModule, Seq2SeqLitModule
from hypermoe.params import parameter_counts
from hypermoe.validation import (
    check_length_fits,
    check_length_holds_text,
    check_model,
    check_monitors,
    check_run_settings,
    instantiate_data,
    instantiate_setting,
    warn_if_no_expert_is_unselected,
    warn_if_router_gets_no_task_gradient,
)

log = logging.getLogger(__name__)

# backbone.kind -> (the DataModule it trains on, its LightningModule)
_FAMILIES = {
    "encoder": (TaskDataModule, ClassifierLitModule),
    "causal_lm": (LMDataModule, CausalLMLitModule),
    "seq2seq": (Seq2SeqDataModule, Seq2SeqLitModule),
}


def build(cfg: DictConfig, vocabulary: list[str] | None = None) -> tuple[pl.LightningDataModule, MoELitModule]:
    """The DataModule and the LightningModule a config describes (shared with eval).
    ``vocabulary``: the characters a checkpoint was trained with, for a character corpus."""
    data = instantiate_data(cfg.data)
    model = to_container(cfg.model)
    coefficients = model.pop("aux_loss_coefficients")
    backbone = to_container(cfg.backbone)
    kind = backbone.get("kind", "encoder")
    if kind not in _FAMILIES:
        raise ConfigError(f"backbone.kind={kind!r} is not one of {sorted(_FAMILIES)}")
    data_class, module_class = _FAMILIES[kind]
    if type(data) is not data_class:  # exact: the text-to-text DataModule derives from the classification one
        raise ConfigError(
            f"backbone.kind={kind!r} trains on {data_class.__name__} data, but the data config builds "
            f"{type(data).__name__}: pick a data config made for this backbone"
        )
    extra = {}
    if kind == "encoder":
        task = data.task
        net, tokenizer = build_classifier(backbone, model, task.kind, task.num_labels, task.num_spans)
    elif kind == "causal_lm":
        chars = data.char_vocabulary(vocabulary) if data.task.characters else None
        net, tokenizer = build_causal_lm(backbone, model, chars)
    else:
        net, tokenizer = build_seq2seq(backbone, model)
        extra = {"tokenizer": tokenizer}
    check_length_fits(cfg.data, "block_size" if kind == "causal_lm" else "max_length", net)
    if kind != "causal_lm":  # a language model's blocks hold no special tokens
        check_length_holds_text(cfg.data, tokenizer, pair=kind == "encoder")
    data.set_tokenizer(tokenizer)
    task = {"name": data.task.qualified_name, "signature": data.task.signature()}
    run_info = {"config": to_container(cfg), "seed": cfg.seed, "git": git_revision(), "task": task}
    if isinstance(tokenizer, CharVocabulary):  # checkpoints carry it: eval and resumes read no text for it
        run_info["vocabulary"] = tokenizer.chars
    module = module_class(
        net,
        data.task,
        coefficients,
        optimizer=instantiate(cfg.optimizer),
        **to_container(cfg.scheduler),
        run_info=run_info,
        **extra,
    )
    return data, module


def _callbacks(cfg: DictConfig, main_metric: str, modes: dict[str, str], has_logger: bool) -> list[pl.Callback]:
    """The configured callbacks; ``monitor: auto`` is the task's selection metric, and ``mode: auto``
    the direction of the monitored key (``modes``; a train/ key is a loss; without a key, either)."""
    callbacks = []
    for name, callback_cfg in (cfg.get("callbacks") or {}).items():
        if callback_cfg is None:
            continue
        overrides = {}
        monitor = callback_cfg.get("monitor")
        if monitor == "auto":
            monitor = overrides["monitor"] = f"val/{main_metric}"
            overrides["mode"] = modes[monitor]
        elif callback_cfg.get("mode") == "auto":
            overrides["mode"] = modes.get(monitor, "min")
        if cfg.get("ckpt_path") and "dirpath" in callback_cfg:
            # a resumed run keeps checkpointing where it started, so its best-k record
            # (which Lightning drops when the folder changes) carries on
            overrides["dirpath"] = str(Path(cfg.ckpt_path).resolve().parent)
        callbacks.append(instantiate_setting(f"callbacks.{name}", callback_cfg, **overrides))
    # the learning-rate monitor has nowhere to write without a logger (logger=none)
    return [c for c in callbacks if has_logger or not isinstance(c, LearningRateMonitor)]


def _loggers(cfg: DictConfig, resumed_wandb_id: str | None) -> list:
    """The configured loggers; a W&B run is tagged with the run's ``tags`` too (a table's or a
    sweep's name), and a resumed run logs into the W&B run it started."""
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        if logger_cfg is None:
            continue
        overrides = {}
        if logger_cfg.get("_target_", "").endswith("WandbLogger"):
            overrides["tags"] = list(dict.fromkeys([*(logger_cfg.get("tags") or []), *(cfg.get("tags") or [])]))
            if resumed_wandb_id and not logger_cfg.get("id"):
                overrides |= {"id": resumed_wandb_id, "resume": "must"}
        loggers.append(instantiate(logger_cfg, **overrides))
    return loggers


def _start_wandb_run(logger: WandbLogger) -> Any:
    """The logger's W&B run, started; no API key (online, not logged in), or another setting W&B
    refuses, is a configuration error, not a traceback."""
    from wandb.errors import UsageError

    try:
        return logger.experiment
    except UsageError as error:
        raise ConfigError(
            f"logger=wandb: {str(error).rstrip('.')}; or keep the run local with WANDB_MODE=offline, "
            "or log elsewhere (logger=csv)"
        ) from None


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON's null), in nested dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_null(item) for item in value]
    return value


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured; write and return ``metrics.json``'s content."""
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # .hydra/config.yaml keeps the interpolations; this is what they resolved to
    OmegaConf.save(cfg, output_dir / "resolved_config.yaml", resolve=True)
    check_run_settings(cfg)
    check_model(cfg.model)
    warn_if_router_gets_no_task_gradient(cfg.model)
    warn_if_no_expert_is_unselected(cfg.model)
    pl.seed_everything(cfg.seed, workers=True)
    resumed, resumed_step = {}, None
    if cfg.get("ckpt_path"):
        checkpoint = load_checkpoint(cfg.ckpt_path)
        check_checkpoint_matches(checkpoint, cfg)
        check_resume_settings(checkpoint, cfg)
        resumed, resumed_step = checkpoint["hypermoe"], checkpoint["global_step"]
        del checkpoint  # Lightning loads it again, into the model
    data, module = build(cfg, resumed.get("vocabulary"))
    check_monitors(cfg.get("callbacks"), module.monitor_modes())
    ensure_checkpoint_folders(cfg)
    if "vocabulary" in module.run_info:
        CharVocabulary(module.run_info["vocabulary"]).save(output_dir / "vocabulary.json")
    loggers: list = []
    exit_code = 1  # what the W&B run is marked with: failed, until training has finished
    try:  # from the first logger on, so a failing job still finishes its W&B run
        loggers = _loggers(cfg, resumed.get("wandb_id"))
        callbacks = _callbacks(cfg, data.task.main_metric, module.monitor_modes(), bool(loggers))
        trainer: pl.Trainer = instantiate_setting(
            "trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
        )
        if resumed:
            check_resume_world_size(resumed, trainer.world_size, cfg)
        for logger in loggers:  # started once the run is sure to go ahead
            if isinstance(logger, WandbLogger):
                module.run_info["wandb_id"] = _start_wandb_run(logger).id  # checkpoints carry it for resuming
        counts = parameter_counts(module.net)
        log.info("parameters: %s", counts)
        for logger in loggers:
            logger.log_hyperparams({"params": counts, **module.run_info["config"]})
        ctrl_c = CtrlCAsSigterm()
        try:
            with ctrl_c:
                trainer.fit(module, datamodule=data, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        except SIGTERMException as stop:  # scancel, a preemption, kill, Ctrl-C: Lightning stopped at the next step
            last = last_saved_checkpoint(trainer)
            log.error(
                "%s at step %d (epoch %d): the run stopped before it finished and wrote no metrics.json. %s",
                "Ctrl-C (SIGINT)" if ctrl_c.pressed else "SIGTERM",
                trainer.global_step,
                trainer.current_epoch,
                f"Resume with ckpt_path={last}" if last else "No checkpoint was saved.",
            )
            exit_code = stop.exit_code = SIGINT_EXIT_CODE if ctrl_c.pressed else SIGTERM_EXIT_CODE
            raise
        except ValueError as error:  # Lightning checks the interval against an epoch's batches once it has them
            if "`val_check_interval`" not in str(error):
                raise
            interval = cfg.trainer.get("val_check_interval")
            raise ConfigError(
                f"trainer.val_check_interval={interval}: {' '.join(str(error).split())} (Here an epoch's batches "
                "follow from the data's size, data.batch_size and trainer.limit_train_batches; a backbone's recipe "
                "sets the interval as backbone.recipe.val_check_interval; check_val_every_n_epoch is under trainer.)"
            ) from None
        validated_now = any(key.startswith("val/") for key in trainer.callback_metrics)
        if trainer.global_step == resumed_step and not validated_now:
            log.warning(
                "ckpt_path=%s is of a run that had finished (step %d): nothing was left to train or validate; "
                "metrics.json repeats the run's validations, and has no final values of its own",
                cfg.ckpt_path,
                resumed_step,
            )
        metrics = {
            "task": data.task.qualified_name,
            "model": cfg.model.variant,
            "seed": cfg.seed,
            "backbone": cfg.backbone.get("pretrained") or "random",
            "tags": list(cfg.get("tags") or []),
            "ablation": config_choice("ablation"),  # the conf/ablation row: what hyper_ablation tables group by
            "model_config": to_container(cfg.model),  # what tables group runs by (N, k, aggregation, ...)
            "final": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            "best": module.best_metrics(),
            "main_metric": data.task.main_metric,
            "params": counts,
            "history": module.val_history,  # every validation's metrics, by training step
            # per MoE layer, each expert's share over the last validation ({} without the ExpertLoad callback)
            "expert_load": next((c.expert_load for c in callbacks if isinstance(c, ExpertLoad)), {}),
            # examples (LM: blocks) in the training set after subsampling; from the datamodule, since
            # the trainer holds no training dataloader when limit_train_batches=0
            "train_size": len(data.train_dataloader().dataset),
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "wall_seconds": round(time.perf_counter() - start, 1),
            "git": module.run_info["git"],
            # a CPU run repeats its numbers to the last digit only with the same torch and thread count
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        }
        metrics["validated"] = bool(module.val_history)  # limit_val_batches=0 or a run shorter than one interval
        if not metrics["validated"]:
            log.warning("the run never validated: metrics.json records no metric (null)")
        metrics = finite_or_null(metrics)
        if trainer.is_global_zero:
            out = output_dir / "metrics.json"
            out.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")  # strict JSON: no NaN tokens
            log.info("validation: %s (best %s); wrote %s", metrics["final"], metrics["best"], out)
            if not cfg.get("keep_checkpoints", True):  # the run is recorded: nothing left to resume
                removed = remove_checkpoints(trainer, cfg.get("ckpt_path"))
                log.info("keep_checkpoints=false: removed %s", ", ".join(map(str, removed)) or "no checkpoint")
        main = f"val/{data.task.main_metric}"
        last_validation = metrics["history"][-1] if metrics["history"] else {}  # also of a run resumed when done
        if metrics["validated"] and last_validation.get(main) is None:
            raise NoResultError(
                f"{main} is not a number at the last validation (metrics.json records it as null): the run has no "
                f"result. {module.val_history[-1]}"
            )
        exit_code = 0
        return metrics
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=exit_code)  # one W&B run per job, also in in-process multiruns and on failure
