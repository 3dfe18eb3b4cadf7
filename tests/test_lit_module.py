"""What the LightningModules train and keep: the loss they compose, the parameters they decay, the
learning-rate schedule, the best-so-far values."""

from types import SimpleNamespace

import pytest
import torch
from helpers import TINY, compose_config

from hypermoe.backbones.heads import task_loss
from hypermoe.lit_module import parameter_groups
from hypermoe.moe import sum_aux_losses
from hypermoe.train import build

LR = 1e-3


def _tiny(tmp_path, *overrides):
    data, module = build(compose_config("train", [*TINY, "experiment=synthetic_tiny", *overrides], tmp_path))
    data.setup("fit")
    return data, module


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer: nothing to log to
def test_the_training_loss_is_the_task_loss_plus_each_aux_loss_times_its_coefficient(tmp_path):
    coefficients = {"balance": 2.0, "z": 0.5}  # large, so that a dropped or mis-signed term shows
    data, module = _tiny(
        tmp_path, "model=hypermoe", *(f"model.aux_loss_coefficients.{k}={v}" for k, v in coefficients.items())
    )
    batch = next(iter(data.train_dataloader()))
    module.train()
    torch.manual_seed(0)
    loss = module.training_step(batch, 0)
    torch.manual_seed(0)  # the same dropout and router noise again
    expected = task_loss(module(batch), batch["labels"], module.task.kind)
    aux = sum_aux_losses(module.net.moe)
    assert set(aux) == set(coefficients) and all(value > 0 for value in aux.values())
    torch.testing.assert_close(loss, expected + sum(c * aux[name] for name, c in coefficients.items()))


def test_weight_decay_reaches_matrices_only(tmp_path):
    _, module = _tiny(tmp_path, "model=hypermoe")
    decayed, undecayed = parameter_groups(module)
    assert "weight_decay" not in decayed and undecayed["weight_decay"] == 0.0  # the optimizer's, and none
    assert decayed["params"] and all(p.dim() >= 2 for p in decayed["params"])
    assert undecayed["params"] and all(p.dim() == 1 for p in undecayed["params"])
    assert len(decayed["params"]) + len(undecayed["params"]) == len(list(module.parameters()))


def _learning_rates(module, total: int) -> list[float]:
    module.trainer = SimpleNamespace(estimated_stepping_batches=total)  # all configure_optimizers reads of it
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(total + 1):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(
    ("schedule", "at_middle", "at_end"),
    [("linear", LR * 45 / 90, 0.0), ("cosine", LR * (0.1 + 0.9 * 0.5), LR * 0.1)],
)
def test_the_schedule_warms_up_then_decays_as_configured(tmp_path, schedule, at_middle, at_end):
    overrides = [f"optimizer.lr={LR}", "scheduler.warmup_ratio=0.1", f"scheduler.schedule={schedule}"]
    _, module = _tiny(tmp_path, "model=topk", *overrides, "scheduler.min_lr_ratio=0.1")
    rates = _learning_rates(module, total=100)
    assert rates[0] == 0.0 and rates[5] == pytest.approx(LR / 2) and rates[10] == pytest.approx(LR)  # 10 warm-up steps
    assert rates[55] == pytest.approx(at_middle) and rates[100] == pytest.approx(at_end, abs=1e-12)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # a loaded state counts no update of its own
def test_a_resumed_run_keeps_its_best_so_far(tmp_path):
    """The best-so-far trackers are in the state dict, so a checkpoint carries them."""
    _, module = _tiny(tmp_path, "model=topk")
    module.val_best["accuracy"].update(torch.tensor(0.9))
    _, resumed = _tiny(tmp_path, "model=topk")
    resumed.load_state_dict(module.state_dict())
    assert resumed.val_best["accuracy"].compute().item() == pytest.approx(0.9)


def test_token_type_ids_reach_the_encoder(tmp_path):
    """BERT-style pairs mark their second segment with token type 1."""
    _, module = _tiny(tmp_path, "model=topk")
    net = module.net.eval()
    ids, mask = torch.randint(5, 100, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    with torch.no_grad():
        first = net(ids, mask, token_type_ids=torch.zeros_like(ids))
        second = net(ids, mask, token_type_ids=torch.ones_like(ids))
    assert not torch.allclose(first, second)
