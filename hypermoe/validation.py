"""What a run checks before any compute (hypermoe.cli turns a ``ConfigError`` into one message and an exit code).

Unknown keys and misspelt option names are Hydra's to refuse (the composed config is in
struct mode). Values are checked here: the model settings by building the MoE layers on
the meta device (every constructor check runs, nothing is allocated), the data settings by
constructing the DataModule (which reads no file). ``ckpt_path`` and the checkpoint folders are
``hypermoe.checkpoint_checks``'.
"""

import inspect
import logging
import math
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf
from transformers import PreTrainedModel

from hypermoe.backbones.patching import choose_layers
from hypermoe.config import to_container
from hypermoe.data.metrics import metric_mode
from hypermoe.errors import ConfigError
from hypermoe.lit_module import SCHEDULES
from hypermoe.moe.build import stack_from_config
from hypermoe.moe.router import AUX_LOSSES

log = logging.getLogger(__name__)


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


def warn_if_no_expert_is_unselected(model: DictConfig) -> bool:
    """HyperMoE with top_k = num_experts leaves no expert unselected: an aggregation over the
    unselected experts' embeddings then gives every token the same selection embedding, and the
    HyperExpert is one static adapter per layer. Allowed, said at start-up; True if so."""
    static = (
        model.get("variant") == "hypermoe"
        and model.get("top_k") == model.get("num_experts")
        and model.get("aggregation", "sum") not in ("all", "selected")
    )
    if static:
        log.warning(
            "model.top_k=%s = model.num_experts: no expert is left unselected, so model.aggregation=%s gives every "
            "token the same selection embedding and the HyperExpert is a static adapter (variant=topk_adapter "
            "is that model); HyperMoE needs top_k < num_experts",
            model.top_k, model.get("aggregation", "sum"),
        )  # fmt: skip
    return static


# the values Lightning's Trainer takes for precision (its documented ones)
PRECISIONS = (
    "64-true",
    "32-true",
    "16-true",
    "bf16-true",
    "16-mixed",
    "bf16-mixed",
    "64",
    "32",
    "16",
    "bf16",
    64,
    32,
    16,
)
LOSS_SCALED = ("16-mixed", "16", 16)  # fp16 autocast with a GradScaler (bf16 needs none)
# the keys of the scheduler group: MoELitModule's schedule arguments
SCHEDULER_KEYS = ["schedule", "warmup_ratio", "min_lr_ratio"]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def first_line(error: BaseException) -> str:
    """An error's first line, or its class where it has no message (torch's overload lists run to many lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def is_seed(value: Any) -> bool:
    return is_int(value) and 0 <= value < 2**32  # Lightning's seed_everything, numpy: 32 bits


SEED_RANGE = f"must be an integer in [0, {2**32 - 1}]"


class _Problems(list):
    """Every bad key of a config, one message each, raised together."""

    def check(self, ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            self.append(f"{key}={value!r} {allowed}")

    def has(self, prefix: str) -> bool:
        """Whether a problem names a key starting with ``prefix``."""
        return any(problem.startswith(prefix) for problem in self)

    def raise_if_any(self) -> None:
        if len(self) == 1:
            raise ConfigError(self[0])
        if self:
            raise ConfigError(f"{len(self)} settings are invalid:\n" + "\n".join(f"  {problem}" for problem in self))


def check_run_settings(cfg: DictConfig) -> None:
    """The run-level keys train.py reads besides the model's, each against what it allows, before
    any data is read, model built or Trainer made: every bad one is named, with what it allows."""
    problems = _Problems()
    for key, lowest in (("checkpoint_every_n_steps", 0), ("routing_log_every", 1)):
        value = cfg.get(key)
        problems.check(is_int(value) and value >= lowest, key, value, f"must be an integer >= {lowest}")
    problems.check(is_seed(cfg.get("seed")), "seed", cfg.get("seed"), SEED_RANGE)
    for key in ("data.seed", "callbacks.batch_reseed.seed"):
        value = OmegaConf.select(cfg, key, default=cfg.get("seed"))
        if value != cfg.get("seed"):  # their default is ${seed}: a bad seed is named once, as seed
            problems.check(is_seed(value), key, value, SEED_RANGE)
    for key in ("keep_checkpoints", "resume_strict"):
        problems.check(isinstance(cfg.get(key, True), bool), key, cfg.get(key), "must be true or false")
    tags = cfg.get("tags")
    tags_ok = tags is None or (isinstance(tags, ListConfig) and all(isinstance(tag, str) for tag in tags))
    problems.check(tags_ok, "tags", tags, "must be a list of names, e.g. tags=[experts_topk]")
    ckpt_path = cfg.get("ckpt_path")
    ckpt_ok = ckpt_path is None or (isinstance(ckpt_path, str) and ckpt_path.strip() != "")
    problems.check(ckpt_ok, "ckpt_path", ckpt_path, "must be a checkpoint to resume from, or null to start afresh")
    for name, callback in (cfg.get("callbacks") or {}).items():
        top_k = (callback or {}).get("save_top_k", -1)
        top_k_ok = is_int(top_k) and top_k >= -1
        problems.check(top_k_ok, f"callbacks.{name}.save_top_k", top_k, "must be an integer >= -1 (-1: keep every one)")
    _check_coefficients(cfg.model.get("aux_loss_coefficients"), problems)
    _check_optimizer(cfg.get("optimizer"), cfg.get("scheduler"), problems)
    _check_trainer(cfg.get("trainer"), problems)
    _check_loss_scaling(cfg.get("trainer"), cfg.get("optimizer"), problems)
    _check_data_sizes(cfg.get("data"), problems)
    _check_dropouts(cfg.get("backbone"), problems)
    try:  # the form; the block range once the backbone is built. Switch's "sparse" (its own MoE blocks) is its own
        if cfg.model.moe_layers != "sparse":
            choose_layers(cfg.model.moe_layers, num_layers=None)
    except ValueError as error:
        problems.append(str(error))
    problems.raise_if_any()


def is_finite(value: Any, lowest: float, strict: bool = False) -> bool:
    """A finite number >= lowest (> lowest when strict)."""
    return _is_number(value) and math.isfinite(value) and (value > lowest if strict else value >= lowest)


def is_count(value: Any, unbounded: bool = False) -> bool:
    """An integer >= 1 (or -1, where that means "no bound")."""
    return is_int(value) and (value >= 1 or (unbounded and value == -1))


def _check_coefficients(coefficients: Any, problems: _Problems) -> None:
    if not isinstance(coefficients, DictConfig):
        problems.append(f"model.aux_loss_coefficients={coefficients!r} must map aux loss names to numbers")
        return
    for name, value in coefficients.items():
        key = f"model.aux_loss_coefficients.{name}"
        if name not in AUX_LOSSES:  # a misspelt name would weigh nothing, and its loss would keep its default
            problems.append(f"{key}: no router records an aux loss {name!r}; the aux losses are {list(AUX_LOSSES)}")
            continue
        problems.check(is_finite(value, 0), key, value, "must be a finite number >= 0")


def _check_optimizer(optimizer: Any, scheduler: Any, problems: _Problems) -> None:
    lr, decay = optimizer.get("lr"), optimizer.get("weight_decay", 0.0)
    problems.check(is_finite(lr, 0, strict=True), "optimizer.lr", lr, "must be a finite number > 0")
    problems.check(is_finite(decay, 0), "optimizer.weight_decay", decay, "must be a finite number >= 0")
    if "betas" in optimizer:  # an optimizer without betas (SGD) is given without the key: ~optimizer.betas
        betas = optimizer.betas
        betas = list(betas) if isinstance(betas, ListConfig) else betas
        betas_ok = isinstance(betas, list) and len(betas) == 2 and all(is_finite(b, 0) and b < 1 for b in betas)
        problems.check(betas_ok, "optimizer.betas", betas, "must be two numbers in [0, 1)")
    fused = optimizer.get("fused")
    problems.check(fused is None or isinstance(fused, bool), "optimizer.fused", fused, "must be true, false or null")
    _check_optimizer_arguments(optimizer, problems)
    if not problems.has("optimizer."):  # the rest as torch checks it, where the keys above are right
        _check_optimizer_builds(optimizer, problems)
    for key in scheduler:
        problems.check(key in SCHEDULER_KEYS, f"scheduler.{key}", scheduler[key], f"is not one of {SCHEDULER_KEYS}")
    warmup, floor = scheduler.get("warmup_ratio"), scheduler.get("min_lr_ratio", 0.0)
    problems.check(is_finite(warmup, 0) and warmup < 1, "scheduler.warmup_ratio", warmup, "must be a number in [0, 1)")
    problems.check(is_finite(floor, 0) and floor <= 1, "scheduler.min_lr_ratio", floor, "must be a number in [0, 1]")
    schedule = scheduler.get("schedule", "linear")
    problems.check(schedule in SCHEDULES, "scheduler.schedule", schedule, f"must be one of {list(SCHEDULES)}")


def _check_dropouts(backbone: Any, problems: _Problems) -> None:
    """The backbone's dropout probabilities: its head's, and its transformer config's (BERT's
    *_dropout_prob, GPT-2's *_pdrop), which torch would refuse only in the first forward."""
    config = backbone.get("config") or {}
    dropouts = {f"backbone.config.{key}": config[key] for key in config if "dropout" in key or "pdrop" in key}
    for key, value in {"backbone.head_dropout": backbone.get("head_dropout"), **dropouts}.items():
        if value is not None:
            problems.check(is_finite(value, 0) and value < 1, key, value, "must be a probability in [0, 1)")


def _check_optimizer_arguments(optimizer: Any, problems: _Problems) -> None:
    """Every optimizer key is an argument of the optimizer's class (torch.optim.SGD takes no betas)."""
    target = optimizer.get("_target_")
    try:
        accepted = inspect.signature(get_class(target)).parameters
    except (ImportError, ValueError, TypeError, AttributeError) as error:
        problems.append(f"optimizer._target_={target!r} is not an optimizer class this Python can import: {error}")
        return
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in accepted.values()):
        return  # it takes any keyword
    for key in optimizer:
        if not key.startswith("_") and key not in accepted:
            problems.append(f"optimizer.{key}: {target} takes no argument {key!r} (leave it out: ~optimizer.{key})")


def _check_optimizer_builds(optimizer: Any, problems: _Problems) -> None:
    """The optimizer made, and one step taken, on a one-number parameter on the CPU: what torch
    refuses only then (a negative eps; a string for a flag the fused kernel reads at its first step).
    ``capturable`` steps need a GPU parameter: made only. The closure is for optimizers that need
    one (LBFGS), as Lightning passes it."""
    if optimizer.get("_partial_") is not True:
        problems.append("optimizer._partial_ must be true: the optimizer is made later, with the model's parameters")
        return
    parameter = torch.nn.Parameter(torch.zeros(1))
    parameter.grad = torch.ones(1)
    try:
        made = instantiate(optimizer)([parameter])
        if not optimizer.get("capturable"):
            made.step(lambda: torch.zeros(()))
    except Exception as error:  # whatever a user's optimizer class raises on its settings
        problems.append(f"optimizer: {optimizer._target_} refuses these settings: {first_line(error)}")


def _check_loss_scaling(trainer: Any, optimizer: Any, problems: _Problems) -> None:
    """fp16 mixed precision scales the loss, and a fused optimizer unscales the gradients only inside its
    step, so nothing can clip them before it: Lightning refuses at the first step, this before any compute."""
    precision, clip = trainer.get("precision"), trainer.get("gradient_clip_val")
    if precision in LOSS_SCALED and optimizer.get("fused") is True and clip:
        problems.append(
            f"trainer.precision={precision!r} with optimizer.fused=true and trainer.gradient_clip_val={clip}: fp16 "
            "scales the loss, and a fused optimizer unscales the gradients only inside its step, so they cannot be "
            "clipped before it: set optimizer.fused=false, trainer.precision=bf16-mixed (no loss scaling) or "
            "trainer.gradient_clip_val=null"
        )


def _check_trainer(trainer: Any, problems: _Problems) -> None:
    """The Trainer's settings this project's runs depend on, before the Trainer exists."""
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    epochs_ok = epochs is None or is_count(epochs, unbounded=True)
    problems.check(epochs_ok, "trainer.max_epochs", epochs, "must be an integer >= 1, or -1 to let max_steps decide")
    problems.check(is_count(steps, unbounded=True), "trainer.max_steps", steps, "must be an integer >= 1, or -1")
    if epochs == -1 and steps == -1:
        problems.append("trainer.max_epochs=-1 and trainer.max_steps=-1: one of them must bound the run")
    precision = trainer.get("precision", "32-true")
    problems.check(precision in PRECISIONS, "trainer.precision", precision, f"must be one of {list(PRECISIONS)}")
    devices = trainer.get("devices", "auto")
    devices = list(devices) if isinstance(devices, ListConfig) else devices
    indices = isinstance(devices, list) and bool(devices) and all(is_int(d) and d >= 0 for d in devices)
    devices_ok = devices == "auto" or is_count(devices, unbounded=True) or indices
    problems.check(devices_ok, "trainer.devices", devices, "must be an integer >= 1, -1 (all), 'auto' or a list")
    for key in ("accumulate_grad_batches", "log_every_n_steps"):
        problems.check(is_count(trainer.get(key, 1)), f"trainer.{key}", trainer.get(key), "must be an integer >= 1")
    every = trainer.get("check_val_every_n_epoch", 1)
    problems.check(every is None or is_count(every), "trainer.check_val_every_n_epoch", every, "must be >= 1 or null")
    interval = trainer.get("val_check_interval")
    fraction = isinstance(interval, float) and 0 < interval <= 1
    problems.check(
        interval is None or is_count(interval) or fraction,
        "trainer.val_check_interval",
        interval,
        "must be null (every epoch), an integer >= 1 (training steps) or a fraction in (0, 1] of an epoch",
    )
    strategy = trainer.get("strategy", "auto")
    spawned = isinstance(strategy, str) and strategy.startswith(("ddp_spawn", "ddp_fork", "ddp_notebook"))
    problems.check(
        not spawned,
        "trainer.strategy",
        strategy,
        "trains in processes started from this one, which keep the run's results (its validations, expert "
        "load, data) to themselves: use trainer=ddp (strategy ddp), whose process 0 is this one",
    )
    deterministic = trainer.get("deterministic")  # Lightning reads any other string as true, and checks nothing
    problems.check(
        deterministic in (None, True, False, "warn"),
        "trainer.deterministic",
        deterministic,
        "must be true, false, warn or null",
    )
    clip = trainer.get("gradient_clip_val")
    problems.check(
        clip is None or is_finite(clip, 0), "trainer.gradient_clip_val", clip, "must be a number >= 0 or null"
    )
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches"):
        limit = trainer.get(key)
        batches = is_int(limit) and limit >= 0
        share = isinstance(limit, float) and 0 <= limit <= 1
        problems.check(
            limit is None or batches or share,
            f"trainer.{key}",
            limit,
            "must be an integer >= 0 (batches), a fraction in [0, 1] of them, or null (all)",
        )


def check_eval_trainer(trainer: Any, split: str) -> None:
    """eval.py's Trainer settings, as a training run's are checked, and a limit that leaves its split
    no batch (validation runs ``limit_val_batches``, the test and diagnostic splits predict)."""
    problems = _Problems()
    _check_trainer(trainer, problems)
    key = "limit_val_batches" if split == "validation" else "limit_predict_batches"
    if trainer.get(key) == 0:
        problems.append(f"trainer.{key}={trainer.get(key)!r} leaves split={split} no batch to evaluate")
    problems.raise_if_any()


# the data keys that count something: (allowed, the message); each only where the data config has it
_DATA_SIZES = {
    "batch_size": (is_count, "must be an integer >= 1"),
    "eval_batch_size": (is_count, "must be an integer >= 1"),
    "max_length": (is_count, "must be an integer >= 1"),
    "block_size": (lambda value: is_int(value) and value >= 2, "must be an integer >= 2"),
    "num_beams": (is_count, "must be an integer >= 1"),
    "num_workers": (lambda value: is_int(value) and value >= 0, "must be an integer >= 0"),
    "max_target_length": (lambda value: value is None or is_count(value), "must be an integer >= 1, or null"),
    "max_train_examples": (lambda value: value is None or is_count(value), "must be an integer >= 1, or null for all"),
    "max_train_blocks": (lambda value: value is None or is_count(value), "must be an integer >= 1, or null for all"),
}


def check_data_sizes(data: Any) -> None:
    """The data config's sizes alone: for a command that reads data with a model it did not build
    from this config (``eval.py``), where ``check_run_settings`` does not run."""
    problems = _Problems()
    _check_data_sizes(data, problems)
    problems.raise_if_any()


def _check_data_sizes(data: Any, problems: _Problems) -> None:
    """Sizes and subsample limits: 0 or a negative number is an error, never "no limit"."""
    for key, (allowed, message) in _DATA_SIZES.items():
        if key in (data or {}):
            problems.check(allowed(data[key]), f"data.{key}", data[key], message)


def check_monitors(callbacks: Any, modes: dict[str, str]) -> None:
    """Each callback's ``monitor``: ``auto`` (the task's selection metric), a validation key the run
    logs (``modes``: each with its direction), or another logged key (train/, moe/, lr-); a misspelt
    one would stop the run after its first epoch. ``mode: auto`` needs a key whose direction is known."""
    problems = _Problems()
    for name, callback in (callbacks or {}).items():
        if not callback or "monitor" not in callback:
            continue
        monitor, mode = callback.monitor, callback.get("mode")
        if mode not in (None, "auto", "min", "max"):
            problems.append(f"callbacks.{name}.mode={mode!r} must be auto, min or max")
        elif monitor == "auto" and mode not in (None, "auto"):
            problems.append(
                f"callbacks.{name}.mode={mode!r}: with monitor: auto the task's metric decides the mode; leave "
                "mode: auto, or name the key to monitor"
            )
        if monitor in ("auto", None) or monitor in modes:
            continue
        if str(monitor).startswith("val/"):
            problems.append(
                f"callbacks.{name}.monitor={monitor!r} is not a key this run logs; its validation keys are "
                f"{sorted(modes)}"
            )
        elif mode == "auto" and not str(monitor).startswith("train/"):  # the train/ keys are losses
            problems.append(f"callbacks.{name}.mode=auto: the direction of {monitor!r} is not known: set min or max")
    problems.raise_if_any()


def check_length_fits(data: DictConfig, key: str, net: torch.nn.Module) -> None:
    """data.<key>, the tokens of a sequence, within the backbone's learned positions (BERT's 512,
    GPT-2's n_positions; T5's relative positions have no limit): a longer one fails in the first
    batch that long, deep in the model, naming no key."""
    transformer = next(module for module in net.modules() if isinstance(module, PreTrainedModel))
    positions = getattr(transformer.config, "max_position_embeddings", None)
    length = data.get(key)
    if positions is not None and length is not None and length > positions:
        raise ConfigError(
            f"data.{key}={length} is longer than the backbone's {positions} positions: set data.{key}<={positions}"
        )


def check_length_holds_text(data: DictConfig, tokenizer: Any, pair: bool) -> None:
    """data.max_length above the special tokens the tokenizer adds to an input (to a pair of texts,
    a classifier's worst case): below them the fast tokenizer silently cuts nothing, so inputs run
    past the backbone's positions; at them it keeps no text."""
    specials = tokenizer.num_special_tokens_to_add(pair=pair)
    length = data.get("max_length")
    if is_int(length) and length <= specials:
        raise ConfigError(
            f"data.max_length={length} leaves no room for text: the tokenizer adds {specials} special tokens "
            f"to {'a pair of texts' if pair else 'a text'}; set data.max_length>{specials}"
        )


def check_search_target(cfg: DictConfig) -> None:
    """An Optuna search (conf/hparams_search) optimises what train.py returns, the task's selection
    metric best over epochs (val/<metric>_best): its direction must be that metric's, or the search
    reports the worst trial as the best. ``optimized_metric``, the name the search config gives it,
    is only a label: one that names another metric is warned about."""
    metric = instantiate_data(cfg.data).task.main_metric
    returned, wanted = f"val/{metric}_best", "maximize" if metric_mode(metric) == "max" else "minimize"
    direction = cfg.hydra.sweeper.get("direction")
    if (list(direction) if isinstance(direction, ListConfig) else [direction]) != [wanted]:
        raise ConfigError(
            f"hydra.sweeper.direction={direction!r}: the search optimises {returned}, which is "
            f"{'higher' if wanted == 'maximize' else 'lower'}-better: set hydra.sweeper.direction={wanted}"
        )
    optimized = cfg.get("optimized_metric")
    if optimized not in (None, returned):
        log.warning(
            "optimized_metric=%r, but the search optimises %s, the task's selection metric", optimized, returned
        )


def instantiate_data(data: DictConfig) -> Any:
    """The DataModule of ``data``; its constructor's refusal (unknown task, bad sizes) as a ConfigError."""
    return instantiate_setting("data", data)


def instantiate_setting(key: str, config: DictConfig, **kwargs: Any) -> Any:
    """The object the config group at ``key`` describes (the DataModule, the Trainer, a callback); a
    constructor's refusal of a value (Lightning's, torch's, the project's) as a ConfigError naming the group."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ValueError | TypeError | MisconfigurationException):
            raise ConfigError(f"{key}: {cause}") from None
        raise
