"""A bad configuration stops before any compute, with one message naming the key and what it
allows: in-process (the exception) and from the command line (the message and the exit code)."""

import re
from pathlib import Path

import pytest
import torch
from helpers import QUIET, compose_config, train_cli
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from hypermoe.checkpoint_checks import check_checkpoint_matches
from hypermoe.errors import ConfigError
from hypermoe.moe.build import VARIANTS
from hypermoe.train import run
from hypermoe.validation import check_run_settings

TINY = ["experiment=synthetic_tiny", *QUIET, "trainer.max_epochs=1"]


def _refused(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run(compose_config("train", [*TINY, *overrides], tmp_path))
    assert not (tmp_path / "checkpoints").exists()  # nothing trained


def test_a_validation_interval_longer_than_an_epoch_is_refused_before_the_first_step(tmp_path):
    """Lightning compares it with an epoch's batches once the data is read (exit 1 and a traceback before)."""
    message = "trainer.val_check_interval=100000: `val_check_interval` (100000) must be less than or equal to the"
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(compose_config("train", [*TINY, "trainer.val_check_interval=100000"], tmp_path))
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=topk", "model.top_k=9"], re.escape("model (variant='topk'): top_k=9 must be <= num_experts=8")),
        (["model=topk", "model.top_k=0"], re.escape("top_k must be an integer >= 1, got 0")),
        (["model=hypermoe", "model.num_experts=0"], re.escape("num_experts must be an integer >= 1, got 0")),
        (["model=topk", "model.num_experts=eight"], re.escape("num_experts='eight' must be of type int")),
        (["model=topk", "model.top_k=1.5"], re.escape("top_k=1.5 must be of type int")),
        (["model=topk", "model.jitter_eps=abc"], re.escape("jitter_eps='abc' must be of type float | None")),
        (["model=hypermoe", "model.hypernetwork.bottleneck=1.5"], re.escape("bottleneck=1.5 must be of type int")),
        (
            ["model=topk", "model.capacity_factor_train=0"],
            re.escape("capacity_factor_train must be a number > 0 or None (dropless), got 0"),
        ),
        (
            ["model=topk", "model.capacity_factor_eval=-1.25"],
            re.escape("capacity_factor_eval must be a number > 0 or None (dropless), got -1.25"),
        ),
        (
            ["model=topk", "model.variant=switch"],
            re.escape(f"variant='switch' is not one of {sorted(VARIANTS)}"),
        ),
        (["model=topk", "model.kernel=cuda"], re.escape("kernel='cuda' is not one of ['auto', 'grouped_mm', 'loop']")),
        (
            ["model=topk", "+model.hypernetwork.bottleneck=16"],
            re.escape("hypernetwork settings were given, but variant='topk' has no hypernetwork"),
        ),
        (["model=topk", "+model.aggregation=sum"], r"variant='topk' takes no \['aggregation'\]; it takes \[.*'top_k'"),
        (
            ["model=dense_moe", "+model.top_k=2"],
            re.escape("variant='dense_moe' takes no ['top_k']; it takes ['num_experts']"),
        ),
        (["model=hypermoe", "model.share_hypernetwork=maybe"], re.escape("share_hypernetwork='maybe' must be true")),
        (["model.moe_layers=every_0"], re.escape("model.moe_layers='every_0' is not 'all', 'every_<n>' (n >= 1)")),
        (["model.moe_layers=[0,x]"], re.escape("model.moe_layers=[0, 'x'] must be 'all', 'every_<n>' or a list")),
        (
            ["model.aux_loss_coefficients.balance=lots"],
            re.escape("aux_loss_coefficients.balance='lots' must be a finite number >= 0"),
        ),
        (
            ["+model.aux_loss_coefficients.balanse=0.5"],
            re.escape("model.aux_loss_coefficients.balanse: no router records an aux loss 'balanse'; the aux losses"),
        ),
        (["checkpoint_every_n_steps=-1"], re.escape("checkpoint_every_n_steps=-1 must be an integer >= 0")),
        (["routing_log_every=0.5"], re.escape("routing_log_every=0.5 must be an integer >= 1")),
        (["model.aux_loss_coefficients.z=inf"], re.escape("aux_loss_coefficients.z=inf must be a finite number >= 0")),
        (["trainer.max_epochs=0"], re.escape("trainer.max_epochs=0 must be an integer >= 1, or -1 to let max_steps")),
        (["trainer.max_steps=0"], re.escape("trainer.max_steps=0 must be an integer >= 1, or -1")),
        (
            ["trainer.max_epochs=-1"],
            re.escape("trainer.max_epochs=-1 and trainer.max_steps=-1: one of them must bound"),
        ),
        (["trainer.precision=12"], re.escape("trainer.precision=12 must be one of ['64-true'")),
        (["trainer.devices=0"], re.escape("trainer.devices=0 must be an integer >= 1, -1 (all), 'auto' or a list")),
        (
            ["+trainer.accumulate_grad_batches=0"],
            re.escape("trainer.accumulate_grad_batches=0 must be an integer >= 1"),
        ),
        (["trainer.val_check_interval=1.5"], re.escape("trainer.val_check_interval=1.5 must be null (every epoch)")),
        (["trainer.gradient_clip_val=-1"], re.escape("trainer.gradient_clip_val=-1 must be a number >= 0 or null")),
        (["trainer=ddp", "trainer.strategy=ddp_spawn"], re.escape("trainer.strategy='ddp_spawn' trains in processes")),
        (["+trainer.limit_train_batches=abc"], re.escape("trainer.limit_train_batches='abc' must be an integer >= 0")),
        (
            ["+trainer.limit_val_batches=1.5"],
            re.escape("trainer.limit_val_batches=1.5 must be an integer >= 0 (batches)"),
        ),
        (["optimizer.lr=0"], re.escape("optimizer.lr=0 must be a finite number > 0")),
        (["optimizer.lr=nan"], re.escape("optimizer.lr=nan must be a finite number > 0")),
        (["optimizer.betas=[0.9,1.0]"], re.escape("optimizer.betas=[0.9, 1.0] must be two numbers in [0, 1)")),
        (["optimizer.betas=null"], re.escape("optimizer.betas=None must be two numbers in [0, 1)")),
        (["optimizer.fused=maybe"], re.escape("optimizer.fused='maybe' must be true, false or null")),
        (
            ["optimizer._target_=torch.optim.SGD"],
            re.escape("optimizer.betas: torch.optim.SGD takes no argument 'betas' (leave it out: ~optimizer.betas)"),
        ),
        (
            ["optimizer._target_=torch.optim.Adamw"],
            re.escape("optimizer._target_='torch.optim.Adamw' is not an optimizer class this Python can import"),
        ),
        (
            ["trainer.precision=16-mixed"],
            re.escape("trainer.precision='16-mixed' with optimizer.fused=true and trainer.gradient_clip_val=1.0: fp16"),
        ),
        (
            ["callbacks.model_checkpoint.monitor=val/acc"],
            re.escape("callbacks.model_checkpoint.monitor='val/acc' is not a key this run logs; its validation keys"),
        ),
        (
            ["callbacks.model_checkpoint.monitor=lr-AdamW"],
            re.escape("callbacks.model_checkpoint.mode=auto: the direction of 'lr-AdamW' is not known: set min or max"),
        ),
        (["optimizer._target_=null"], re.escape("optimizer._target_=None is not an optimizer class this Python")),
        (
            ["callbacks.model_checkpoint.mode=maximum"],
            re.escape("callbacks.model_checkpoint.mode='maximum' must be auto, min or max"),
        ),
        (
            ["callbacks.model_checkpoint.mode=min"],
            re.escape("callbacks.model_checkpoint.mode='min': with monitor: auto the task's metric decides the mode"),
        ),
        (
            ["+optimizer.eps=-1"],
            re.escape("optimizer: torch.optim.AdamW refuses these settings: Invalid epsilon value"),
        ),
        (["+optimizer.amsgrad=maybe"], re.escape("optimizer: torch.optim.AdamW refuses these settings:")),
        (["optimizer._partial_=false"], re.escape("optimizer._partial_ must be true: the optimizer is made later")),
        (["+scheduler.foo=1"], re.escape("scheduler.foo=1 is not one of ['schedule', 'warmup_ratio', 'min_lr_ratio']")),
        (["scheduler.warmup_ratio=1.0"], re.escape("scheduler.warmup_ratio=1.0 must be a number in [0, 1)")),
        (["scheduler.min_lr_ratio=1.5"], re.escape("scheduler.min_lr_ratio=1.5 must be a number in [0, 1]")),
        (["scheduler.schedule=step"], re.escape("scheduler.schedule='step' must be one of ['linear', 'cosine']")),
        (["seed=-1"], re.escape("seed=-1 must be an integer in [0, 4294967295]")),
        (["seed=1.5"], re.escape("seed=1.5 must be an integer in [0, 4294967295]")),
        (["seed=4294967296"], re.escape("seed=4294967296 must be an integer in [0, 4294967295]")),
        (["ckpt_path=''"], re.escape("ckpt_path='' must be a checkpoint to resume from, or null to start afresh")),
        (["resume_strict=maybe"], re.escape("resume_strict='maybe' must be true or false")),
        (["tags=foo"], re.escape("tags='foo' must be a list of names, e.g. tags=[experts_topk]")),
        (["keep_checkpoints=sometimes"], re.escape("keep_checkpoints='sometimes' must be true or false")),
        (["data.batch_size=0"], re.escape("data.batch_size=0 must be an integer >= 1")),
        (["data.eval_batch_size=-8"], re.escape("data.eval_batch_size=-8 must be an integer >= 1")),
        (["data.max_length=0"], re.escape("data.max_length=0 must be an integer >= 1")),
        (
            ["data.max_train_examples=0"],
            re.escape("data.max_train_examples=0 must be an integer >= 1, or null for all"),
        ),
        (["data.max_train_examples=-5"], re.escape("data.max_train_examples=-5 must be an integer >= 1, or null")),
        (["data=lm", "data.max_train_blocks=0"], re.escape("data.max_train_blocks=0 must be an integer >= 1, or null")),
        (["data=lm", "data.block_size=1"], re.escape("data.block_size=1 must be an integer >= 2")),
        (
            ["data.max_length=513"],
            re.escape("data.max_length=513 is longer than the backbone's 512 positions: set data.max_length<=512"),
        ),
        (["backbone.head_dropout=1.5"], re.escape("backbone.head_dropout=1.5 must be a probability in [0, 1)")),
        (
            ["backbone=gpt2_tiny", "data=lm", "+backbone.config.attn_pdrop=-0.1"],
            re.escape("backbone.config.attn_pdrop=-0.1 must be a probability in [0, 1)"),
        ),
        (["data.num_workers=-1"], re.escape("data.num_workers=-1 must be an integer >= 0")),
        (  # below BERT's 3 special tokens of a pair the fast tokenizer would cut nothing; at 3 keep no text
            ["data.max_length=2"],
            re.escape("data.max_length=2 leaves no room for text: the tokenizer adds 3 special tokens to a pair"),
        ),
        (
            ["data.max_length=3"],
            re.escape("the tokenizer adds 3 special tokens to a pair of texts; set data.max_length>3"),
        ),
        (["data.seed=-1"], re.escape("data.seed=-1 must be an integer in [0, 4294967295]")),
        (["callbacks.model_checkpoint.save_top_k=-5"], re.escape("callbacks.model_checkpoint.save_top_k=-5 must be")),
        (["callbacks.model_checkpoint.save_top_k=abc"], re.escape("callbacks.model_checkpoint.save_top_k='abc' must")),
        (
            ["trainer.deterministic=maybe"],
            re.escape("trainer.deterministic='maybe' must be true, false, warn or null"),
        ),
        (["model.moe_layers=every_5"], re.escape("model.moe_layers='every_5' selects none of the stack's 2 blocks")),
        (
            ["backbone.config.num_attention_heads=3"],
            re.escape("backbone.config: The hidden size (32) is not a multiple of the number of attention heads (3)"),
        ),
        (
            ["backbone.config.hidden_size=abc"],
            re.escape(
                "backbone.config: Validation error for field 'hidden_size': TypeError: Field 'hidden_size' expected"
            ),
        ),
        (["+backbone.config.vocab_size=50"], re.escape("backbone.config.vocab_size=50: the tokenizer sets it (30522)")),
        (["data.seed=abc"], re.escape("data.seed='abc' must be an integer in [0, 4294967295]")),
        (
            ["callbacks.batch_reseed.seed=abc"],
            re.escape("callbacks.batch_reseed.seed='abc' must be an integer in [0, 4294967295]"),
        ),
        (["data.task=nope"], re.escape("data: data.task='nope' is not a synthetic task; choose one of ['majority']")),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, overrides, message):
    _refused(tmp_path, overrides, message)


@pytest.mark.usefixtures("tokenizers_root")  # checked once the backbone is built, with GPT-2's real vocabulary
def test_a_block_longer_than_the_backbones_positions_is_refused(tmp_path):
    message = "data.block_size=1000 is longer than the backbone's 256 positions: set data.block_size<=256"
    _refused(tmp_path, ["backbone=gpt2_tiny", "data=lm", "data.block_size=1000"], re.escape(message))


@pytest.mark.parametrize("limit", ["0", "0.0", "1.0", "0.25", "3", "null"])
def test_every_batch_limit_lightning_takes_is_let_through(tmp_path, limit):
    """An integer count, a fraction in [0, 1] (0 and 0.0: none) or null (all)."""
    check_run_settings(compose_config("train", [*TINY, f"+trainer.limit_val_batches={limit}"], tmp_path))


def test_an_optimizer_is_given_the_arguments_its_class_takes(tmp_path):
    """SGD has no betas: the key is left out, and what is left passes; a class taking **kwargs takes any."""
    check_run_settings(
        compose_config("train", [*TINY, "optimizer._target_=torch.optim.SGD", "~optimizer.betas"], tmp_path)
    )
    check_run_settings(compose_config("train", [*TINY, "optimizer._target_=helpers.AnyKeywordOptimizer"], tmp_path))


@pytest.mark.parametrize("overrides", [["trainer.precision=16-mixed", "optimizer.fused=false"],
                                       ["trainer.precision=16-mixed", "trainer.gradient_clip_val=null"],
                                       ["trainer.precision=bf16-mixed"]])  # fmt: skip
def test_mixed_precision_is_refused_only_where_fp16_would_have_to_clip_a_fused_optimizer(tmp_path, overrides):
    check_run_settings(compose_config("train", [*TINY, *overrides], tmp_path))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.gradient_clip_algorithm=foo", "trainer: `gradient_clip_algorithm` foo is invalid"),
        (
            "+callbacks.model_checkpoint.every_n_epochs=-1",
            "callbacks.model_checkpoint: Invalid value for every_n_epochs",
        ),
    ],
)
def test_a_value_lightning_refuses_is_a_configuration_error_naming_its_group(tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(compose_config("train", [*TINY, override], tmp_path))
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained


@pytest.mark.parametrize(
    "overrides",
    [
        ["+optimizer.capturable=true", "optimizer.fused=false"],  # steps only on a GPU parameter: made, not stepped
        ["optimizer._target_=torch.optim.LBFGS", "~optimizer.betas", "~optimizer.weight_decay", "~optimizer.fused"],
        ["optimizer._target_=torch.optim.SGD", "~optimizer.betas", "optimizer.fused=false"],
    ],
    ids=["capturable", "lbfgs_needs_a_closure", "sgd"],
)
def test_optimizers_the_build_check_must_not_refuse(tmp_path, overrides):
    check_run_settings(compose_config("train", [*TINY, *overrides], tmp_path))


def test_every_bad_key_is_named_in_one_message(tmp_path):
    _refused(
        tmp_path,
        ["optimizer.lr=-1", "trainer.max_epochs=0", "seed=-3"],
        r"3 settings are invalid:\n  seed=-3 must be .*\n  optimizer.lr=-1 must be .*\n  trainer.max_epochs=0 must be",
    )


def test_an_unknown_task_names_the_benchmark_tasks(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("data.task='rtx' is not a superglue task; choose one of ['boolq'")):
        run(compose_config("train", ["backbone=bert_tiny", *QUIET, "data=superglue", "data.task=rtx"], tmp_path))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.num_expert=4", "Could not override 'model.num_expert'"),  # a typo of an existing key
        ("model=switch", "Could not find 'model/switch'"),  # an unknown variant's config
        ("trainer.max_epoch=3", "Could not override 'trainer.max_epoch'"),
    ],
)
def test_unknown_keys_and_options_are_refused_by_hydra(override, message):
    with pytest.raises(ConfigCompositionException, match=re.escape(message)) as error:
        compose_config("train", [*TINY, override], "/unused")
    if override.startswith("model="):  # the choices are listed
        assert "Available options" in str(error.value) and "hypermoe" in str(error.value)


def test_a_missing_checkpoint_is_refused(tmp_path):
    _refused(
        tmp_path,
        [f"ckpt_path={tmp_path / 'nope.ckpt'}"],
        re.escape(f"ckpt_path='{tmp_path / 'nope.ckpt'}': no such file"),
    )


def test_an_unreadable_checkpoint_is_refused(tmp_path):
    garbage = tmp_path / "last.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 100)
    message = f"ckpt_path='{garbage}' cannot be read as a checkpoint: it is not a whole zip archive, which torch.save"
    _refused(tmp_path / "run", [f"ckpt_path={garbage}"], re.escape(message))
    _refused(tmp_path / "run", [f"ckpt_path={tmp_path}"], re.escape(f"ckpt_path='{tmp_path}' is a folder: name a"))


def test_a_checkpoint_holding_code_is_refused_unread(tmp_path):
    """weights_only: a pickled object (here a class instance) is never constructed."""
    path = tmp_path / "last.ckpt"
    torch.save({"hypermoe": {}, "payload": ConfigError("a pickled object")}, path)
    _refused(tmp_path / "run", [f"ckpt_path={path}"], "cannot be read as a checkpoint: Weights only load failed")


def test_a_checkpoint_of_another_model_is_refused_naming_the_differences(tmp_path):
    run(compose_config("train", [*TINY, "model=topk", "+trainer.limit_train_batches=2"], tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    message = re.escape(f"ckpt_path='{last}' was trained with another model or task than this run asks for: ")
    _refused(tmp_path / "other", ["model=topk", "model.num_experts=4", f"ckpt_path={last}"],
             message + re.escape("model.num_experts=4 (checkpoint: 8)."))  # fmt: skip
    _refused(
        tmp_path / "variant",
        ["model=hypermoe", f"ckpt_path={last}"],
        message + re.escape("model.variant='hypermoe' (checkpoint: 'topk'): add model=topk; model."),
    )  # the variant first: it is why the other model keys differ


@pytest.mark.parametrize(
    ("key", "structural"),
    [("model.top_k", True), ("backbone.d_model", True), ("data.task", True), ("data.benchmark", True),
     ("backbone.recipe.lr", False), ("data.batch_size", False)],
)  # fmt: skip
def test_a_resume_is_refused_for_any_change_of_the_network_or_task_and_for_no_other(key, structural):
    stored = OmegaConf.create({"ckpt_path": "last.ckpt", "model": {"top_k": 1},
                               "backbone": {"d_model": 8, "recipe": {"lr": 1}},
                               "data": {"benchmark": "superglue", "task": "cb", "batch_size": 8}})  # fmt: skip
    requested = stored.copy()
    OmegaConf.update(requested, key, 2)
    checkpoint = {"hypermoe": {"config": OmegaConf.to_container(stored)}}
    if structural:
        with pytest.raises(ConfigError, match=re.escape(f"{key}=2 (checkpoint: ")):
            check_checkpoint_matches(checkpoint, requested)
    else:
        check_checkpoint_matches(checkpoint, requested)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.top_k=9"], "model (variant='topk'): top_k=9 must be <= num_experts=8"),
        (["model.moe_layers=[0,2]"], "model.moe_layers=[0, 2] must be block indices in [0, 2)"),  # once it is built
    ],
)
def test_the_command_line_prints_one_message_and_exits_2(tmp_path, overrides, message):
    result = train_cli(tmp_path, *TINY, "model=topk", *overrides)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"invalid configuration: {message}" in output
    assert "Traceback" not in output
    assert message in (tmp_path / "train.log").read_text()  # kept in the run's log


def test_the_command_line_refuses_an_unknown_key_with_exit_1(tmp_path):
    result = train_cli(tmp_path, *TINY, "model.num_expert=4")
    assert result.returncode == 1
    assert "Key 'num_expert' is not in struct" in result.stderr
