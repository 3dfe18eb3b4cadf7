"""What a run checks before any compute (hypermoe.cli turns a ``ConfigError`` into one message and an exit code).

Unknown keys and misspelt option names are Hydra's to refuse (the composed config is in
struct mode). Values are checked here: the model settings by building the MoE layers on
the meta device (every constructor check runs, nothing is allocated), the data settings by
constructing the DataModule (which reads no file), and ``ckpt_path`` by loading it and
comparing the network it holds with the one the config asks for.
"""

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from hypermoe.backbones.patching import choose_layers
from hypermoe.config import to_container
from hypermoe.errors import ConfigError
from hypermoe.moe.build import stack_from_config
from hypermoe.moe.checks import check_integer

log = logging.getLogger(__name__)

# Keys that do not shape the network: a run may resume with other values.
_NOT_STRUCTURAL = {"backbone.recipe", "backbone.tokenizer_fallback"}


def check_model(model: DictConfig) -> None:
    """Every setting of ``model`` through the layer constructors, on the meta device."""
    settings = to_container(model)
    try:
        with torch.device("meta"):
            stack_from_config(settings, num_layers=2, d_model=8, d_ff=16, activation="gelu", bias=True)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model (variant={settings.get('variant')!r}): {error}") from None


def warn_if_router_gets_no_task_gradient(model: DictConfig) -> bool:
    """Noisy top-k gating at top-1 combines with one renormalised gate, the constant 1: the task
    loss then gives the router no gradient and only its balance losses train it (the official
    HyperMoE GPT-2 recipe). Allowed, since a user names it, and said at start-up; True if so."""
    untrained = model.get("gating") == "noisy" and model.get("top_k") == 1
    if untrained:
        log.warning(
            "model.gating=noisy with model.top_k=1: the combine gate is a softmax over one logit (1.0), so the "
            "task loss gives the router no gradient and only the cv_importance / cv_load losses train it (the "
            "official HyperMoE GPT-2 recipe). gating=renorm keeps the gate at 1 and lets the task train the router."
        )
    return untrained


def check_run_settings(cfg: DictConfig) -> None:
    """The run-level keys train.py reads besides the model's, each against what it allows."""
    try:
        check_integer("checkpoint_every_n_steps", cfg.get("checkpoint_every_n_steps"), lowest=0)
        check_integer("routing_log_every", cfg.get("routing_log_every"), lowest=1)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not isinstance(cfg.get("keep_checkpoints", True), bool):
        raise ConfigError(f"keep_checkpoints={cfg.keep_checkpoints!r} must be true or false")
    coefficients = cfg.model.get("aux_loss_coefficients")
    if not isinstance(coefficients, DictConfig):
        raise ConfigError(f"model.aux_loss_coefficients={coefficients!r} must map aux loss names to numbers")
    for name, value in coefficients.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"model.aux_loss_coefficients.{name}={value!r} must be a number")
    try:  # the form; the block range once the backbone is built. Switch's "sparse" (its own MoE blocks) is its own
        if cfg.model.moe_layers != "sparse":
            choose_layers(cfg.model.moe_layers, num_layers=None)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def instantiate_data(data: DictConfig) -> Any:
    """The DataModule of ``data``; its constructor's refusal (unknown task, bad sizes) as a ConfigError."""
    try:
        return instantiate(data)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ValueError | TypeError):
            raise ConfigError(f"data: {cause}") from None
        raise


def load_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """A checkpoint written by train.py, loaded without unpickling code (``weights_only``)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or holding code: all unreadable here
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"ckpt_path={ckpt_path!r} cannot be read as a checkpoint: {reason}") from None
    if not isinstance(checkpoint, dict) or "hypermoe" not in checkpoint:
        raise ConfigError(f"ckpt_path={ckpt_path!r} was not written by hypermoe's train.py: it holds no run config")
    return checkpoint


def check_checkpoint_matches(checkpoint: dict[str, Any], cfg: DictConfig) -> None:
    """A resumed run must ask for the network (model, backbone) and task the checkpoint was trained with."""
    stored = checkpoint["hypermoe"]["config"]
    requested = to_container(cfg)
    differences = []
    for section in ("model", "backbone", "data.benchmark", "data.task"):
        before, now = _flat(_at(stored, section), section), _flat(_at(requested, section), section)
        for key in sorted(before.keys() | now.keys()):
            was, asked = before.get(key, "<absent>"), now.get(key, "<absent>")
            if was != asked and not any(key == skip or key.startswith(f"{skip}.") for skip in _NOT_STRUCTURAL):
                differences.append(f"{key}={asked!r} (checkpoint: {was!r})")
    if differences:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path!r} was trained with another model or task than this run asks for: "
            + "; ".join(differences)
            + ". Resume with the checkpoint's settings, or start a new run without ckpt_path."
        )


def _at(config: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    return {key: leaf for name, item in value.items() for key, leaf in _flat(item, f"{prefix}.{name}").items()}
