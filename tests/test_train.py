"""The training pipeline end to end on the tiny backbone: every variant, every head kind."""

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from helpers import QUIET, TINY, compose_config
from lightning.pytorch.callbacks import ModelCheckpoint

from hypermoe.callbacks.expert_load import ExpertLoad
from hypermoe.data.lm import get_corpus
from hypermoe.data.tasks import get_task
from hypermoe.lit_module import CausalLMLitModule, Seq2SeqLitModule
from hypermoe.moe.build import VARIANTS
from hypermoe.train import _callbacks, build, run


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_dev_run_every_variant(tmp_path, variant):
    cfg = compose_config("train", [*TINY, f"model={variant}", "data=synthetic", "debug=fast_dev_run"], tmp_path)
    metrics = run(cfg)
    assert metrics["model"] == variant and metrics["steps"] == 1
    # each MoE layer's share of the validation tokens (or routing weight) per expert: a distribution
    expert_load = metrics["expert_load"]
    assert set(expert_load) == (set() if variant == "ffn" else {"layer0", "layer1"})
    for load in expert_load.values():
        assert len(load) == 8 and sum(load) == pytest.approx(1.0) and min(load) >= 0
    params = metrics["params"]
    if hasattr(VARIANTS[variant].layer, "inactive_parameters_per_token"):  # its tokens skip some experts
        assert params["active_per_token"] < params["total"]
    assert (params["hypernetwork"] > 0) == (variant == "hypermoe")


# the other backbone families, each on real data from the data root (small slices of it)
_FAMILY_RUNS = {
    "gpt2_tiny": ["data=lm", "data.block_size=32", "data.max_train_blocks=16"],
    "switch_tiny": ["data=superglue", "data.task=rte", "data.max_train_examples=32", "data.max_length=64"],
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backbone", sorted(_FAMILY_RUNS))
def test_fast_dev_run_every_backbone_and_variant(tmp_path, backbone, variant, data_root):
    overrides = [*QUIET, f"backbone={backbone}", f"model={variant}", "debug=fast_dev_run", *_FAMILY_RUNS[backbone]]
    metrics = run(compose_config("train", [*overrides, f"paths.data_dir={data_root}"], tmp_path))
    assert metrics["model"] == variant and metrics["steps"] == 1
    assert set(metrics["final"]) >= {f"val/{name}" for name in metrics["best"]}
    assert (metrics["params"]["hypernetwork"] > 0) == (variant == "hypermoe")
    assert metrics["train_size"] == {"gpt2_tiny": 16, "switch_tiny": 32}[backbone]  # blocks; examples


@pytest.mark.parametrize(
    ("benchmark", "task"),
    [("superglue", "cb"), ("superglue", "copa"), ("superglue", "multirc"), ("superglue", "wic"),
     ("superglue", "wsc"), ("glue", "stsb"), ("glue", "cola"), ("glue", "mrpc")],
)  # fmt: skip
def test_fast_dev_run_every_head_kind_on_real_data(tmp_path, benchmark, task, data_root):
    overrides = [*TINY, "model=topk", f"data={benchmark}", f"data.task={task}", "debug=fast_dev_run"]
    overrides.append("data.max_train_examples=64")  # tokenizing all of MultiRC would dominate
    cfg = compose_config("train", [*overrides, f"paths.data_dir={data_root}"], tmp_path)
    metrics = run(cfg)
    assert set(metrics["final"]) >= {f"val/{name}" for name in metrics["best"]}
    assert metrics["train_size"] == 64  # every one of these training sets is larger


def test_a_short_run_learns_and_writes_its_record(tmp_path):
    overrides = [*TINY, "experiment=synthetic_tiny", "trainer.max_epochs=4", "model=hypermoe"]
    metrics = run(compose_config("train", overrides, tmp_path))
    assert metrics["best"]["accuracy"] > 0.7  # majority-of-colours is learnable; chance is ~0.5
    assert metrics["train_size"] == 512  # the synthetic training set, whole
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert "${" not in (tmp_path / "resolved_config.yaml").read_text()
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    info = checkpoint["hypermoe"]
    assert info["seed"] == 42 and info["git"] and info["config"]["model"]["variant"] == "hypermoe"


def test_the_record_names_the_torch_version_and_thread_count_the_run_ran_with(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = run(compose_config("train", [*TINY, "data=synthetic", "debug=fast_dev_run"], tmp_path))
    finally:
        torch.set_num_threads(threads)
    assert metrics["torch_threads"] == 1 and metrics["torch_version"] == torch.__version__


def test_bf16_mixed_precision_clips_the_fused_optimizers_gradients(tmp_path, monkeypatch):
    """trainer=gpu's precision: Lightning's mixed-precision plugin would refuse to clip fused AdamW's
    gradients at the first step; bf16 scales no loss, so they are clipped as at full precision."""
    clipped = []
    clip_grad_norm = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm, *a, **k: clipped.append(max_norm)
                        or clip_grad_norm(params, max_norm, *a, **k))  # fmt: skip
    overrides = [*TINY, "experiment=synthetic_tiny", "trainer.precision=bf16-mixed", "trainer.max_epochs=1",
                 "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]  # fmt: skip
    cfg = compose_config("train", overrides, tmp_path)
    assert cfg.optimizer.fused is True and cfg.trainer.gradient_clip_val == 1.0
    metrics = run(cfg)
    assert metrics["steps"] == 2 and clipped == [1.0, 1.0]


def test_each_validation_key_comes_with_the_direction_it_gets_better_in(tmp_path):
    _, module = build(compose_config("train", [*TINY, "experiment=synthetic_tiny"], tmp_path))
    assert module.monitor_modes() == {"val/loss": "min", "val/accuracy": "max", "val/accuracy_best": "max"}
    text_to_text = Seq2SeqLitModule(torch.nn.Linear(1, 1), get_task("superglue", "rte"), {}, None, 0.0, tokenizer=None)
    assert text_to_text.monitor_modes()["val/invalid"] == "min"  # the share of outputs that name no label
    lm = CausalLMLitModule(torch.nn.Linear(1, 1), get_corpus("wikitext2"), {}, None, 0.0)
    assert lm.monitor_modes() == {"val/loss": "min", **dict.fromkeys(["val/perplexity", "val/perplexity_best"], "min")}


def test_a_checkpoint_monitoring_a_named_key_keeps_its_best_in_that_keys_direction(tmp_path):
    overrides = [
        *TINY,
        "experiment=synthetic_tiny",
        "debug=fast_dev_run",
        "callbacks.model_checkpoint.monitor=val/loss",
    ]
    cfg = compose_config("train", overrides, tmp_path)
    assert cfg.callbacks.model_checkpoint.mode == "auto"  # Lightning's ModelCheckpoint takes only min or max
    modes = {"val/loss": "min", "val/accuracy": "max"}
    (checkpoint,) = [c for c in _callbacks(cfg, "accuracy", modes, has_logger=False) if isinstance(c, ModelCheckpoint)]
    assert (checkpoint.monitor, checkpoint.mode) == ("val/loss", "min")
    run(cfg)
    run(compose_config("train", [*overrides[:-1], "callbacks.model_checkpoint.monitor=null"], tmp_path / "no_key"))


def test_the_synthetic_task_honours_its_subsample_size(tmp_path):
    overrides = [*TINY, "experiment=synthetic_tiny", "debug=fast_dev_run", "data.max_train_examples=100"]
    assert run(compose_config("train", overrides, tmp_path))["train_size"] == 100


def test_expert_load_pools_the_last_validation_by_tokens_routed(tmp_path):
    cfg = compose_config("train", [*TINY, "experiment=synthetic_tiny", "debug=limit", "model=topk"], tmp_path)
    metrics = run(cfg)
    # the same validation batches through the final weights, by hand
    data, module = build(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    module.load_state_dict(last["state_dict"])
    module.eval()
    data.setup("validate")
    layers = dict(zip(module.net.moe_names, module.net.moe, strict=True))
    stats = []
    with torch.no_grad():
        for batch, _ in zip(data.val_dataloader(), range(2), strict=False):  # debug=limit: 2 validation batches
            module(batch)
            stats.append({name: dict(layer.routing_stats) for name, layer in layers.items()})
    for name in ("layer0", "layer1"):
        tokens = torch.stack([batch[name]["tokens"] for batch in stats])
        loads = torch.stack([batch[name]["load"] for batch in stats])
        expected = (loads * tokens.unsqueeze(-1)).sum(0) / tokens.sum()
        torch.testing.assert_close(torch.tensor(metrics["expert_load"][name]), expected)
    assert not torch.equal(stats[0]["layer0"]["load"], stats[1]["layer0"]["load"])  # pooled, not the last batch's
    # kept for a run resumed after its last validation
    assert last["callbacks"]["ExpertLoad"]["expert_load"] == metrics["expert_load"]
    # the change is reported from the second validation on: the sanity check is not one to compare with
    reported = ["moe/layer0/expert_change" in entry for entry in last["val_history"]]
    assert len(reported) > 1 and reported == [False] + [True] * (len(reported) - 1)


def test_keep_checkpoints_false_removes_the_runs_checkpoints_once_recorded(tmp_path):
    """The tables' setting: metrics.json is written, then the best and last checkpoints go;
    anything else in the folder stays."""
    other = tmp_path / "checkpoints" / "other.ckpt"  # written once the run has started: a folder holding one is refused
    overrides = [*TINY, "experiment=synthetic_tiny", "trainer.max_epochs=2", "keep_checkpoints=false",
                 "+callbacks.other._target_=helpers.WriteFileAtStart", f"+callbacks.other.path={other}",
                 "+callbacks.other.text=another_run"]  # fmt: skip
    metrics = run(compose_config("train", overrides, tmp_path))
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == ["other.ckpt"]


def test_keep_checkpoints_false_also_removes_the_checkpoint_a_finished_run_resumed_from(tmp_path, caplog):
    """Resuming a run that had already finished saves nothing new: the last.ckpt it resumed
    from is the run's, and goes too."""
    overrides = [*TINY, "experiment=synthetic_tiny", "trainer.max_epochs=1"]
    first = run(compose_config("train", overrides, tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = [*overrides, f"ckpt_path={last}", "keep_checkpoints=false"]
    with caplog.at_level(logging.WARNING, logger="hypermoe.train"):
        again = run(compose_config("train", resumed, tmp_path / "again"))
    assert list((tmp_path / "first" / "checkpoints").iterdir()) == []
    finished = f"ckpt_path={last} is of a run that had finished (step {first['steps']}): nothing was left to train"
    assert finished in caplog.text and again["history"] == first["history"]


def test_expert_change_is_the_share_of_tokens_whose_first_choice_moved(tmp_path):
    """Two validations of 2 batches: layer0's tokens [0, 1, -1 (padding), 2 | 3, 3] then
    [0, 2, -1, 2 | 3, 1]: 2 of the 5 routed tokens changed expert."""
    cfg = compose_config("train", [*TINY, "experiment=synthetic_tiny", "model=topk"], tmp_path)
    _, module = build(cfg)
    strategy = SimpleNamespace(reduce=lambda counts, reduce_op: counts)
    trainer = SimpleNamespace(strategy=strategy, world_size=1, global_rank=0)
    expert_load = ExpertLoad()
    for validation in ([[0, 1, -1, 2], [3, 3]], [[0, 2, -1, 2], [3, 1]]):
        expert_load.on_validation_epoch_start(trainer, module)
        for batch in validation:
            module.net.moe[0].top_expert = torch.tensor(batch)
            module.net.moe[1].top_expert = torch.tensor(batch[::-1])  # layer1: the same tokens reversed per batch
            expert_load.on_validation_batch_end(trainer, module, None, batch, 0)
        changes = expert_load._expert_changes(trainer, module)
    assert changes == {"layer0": pytest.approx(2 / 5), "layer1": pytest.approx(2 / 5)}
    assert expert_load._previous_top_experts["layer0"].tolist() == [0, 2, -1, 2, 3, 1]
    # resumed, then saved again before its next validation (a SIGTERM, a periodic save): kept as restored
    resumed = ExpertLoad()
    resumed.load_state_dict(expert_load.state_dict())
    saved_again = resumed.state_dict()["top_experts_by_process"]
    assert saved_again[0]["layer0"].tolist() == [0, 2, -1, 2, 3, 1] and len(saved_again) == 1
