"""LightningModules: the task loss + the weighted aux losses of every MoE layer, metrics, logging.

``MoELitModule`` holds what every task family shares (aux losses, best-so-far metrics, the
validation history, the optimizer, the run record in checkpoints); ``ClassifierLitModule``
(GLUE / SuperGLUE heads), ``CausalLMLitModule`` (perplexity) and ``Seq2SeqLitModule``
(text-to-text, generation-based evaluation) add their loss and metrics. The net exposes ``moe``
(its MoE layers) and ``moe_names``. What cuts across them (the non-finite loss guard, routing
statistics, expert load, per-batch reseeding, mid-epoch resumes) is in ``hypermoe.callbacks``.
"""

import math
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, MinMetric
from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_linear_schedule_with_warmup

from hypermoe.backbones.heads import task_loss
from hypermoe.data.metrics import build_metrics, metric_mode, predictions
from hypermoe.data.seq2seq import IGNORE_INDEX
from hypermoe.data.tasks import Task
from hypermoe.data.text2text import parse_label
from hypermoe.data.text_metrics import build_text_metrics
from hypermoe.moe import sum_aux_losses, weighted_aux_loss

SCHEDULES = ("linear", "cosine")  # after the warm-up: linear to 0, or cosine to min_lr_ratio * lr


class MoELitModule(pl.LightningModule):
    """Logs ``train/loss`` (total), ``train/task_loss``, ``train/aux/<name>`` (unweighted,
    summed over layers), ``val/loss``, ``val/<metric>`` and ``val/<metric>_best``."""

    def __init__(
        self,
        net: nn.Module,
        task: Any,
        aux_loss_coefficients: dict[str, float],
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_ratio: float,
        schedule: str = "linear",
        min_lr_ratio: float = 0.0,
        run_info: dict[str, Any] | None = None,
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"scheduler.schedule={schedule!r} is not one of {list(SCHEDULES)}")
        self.net, self.task = net, task
        self.aux_loss_coefficients = dict(aux_loss_coefficients)
        self.optimizer_factory, self.warmup_ratio = optimizer, warmup_ratio
        self.schedule, self.min_lr_ratio = schedule, min_lr_ratio
        self.run_info = run_info or {}  # resolved config, seed, git revision: stored in checkpoints
        self.val_best = nn.ModuleDict(
            {name: MinMetric() if metric_mode(name) == "min" else MaxMetric() for name in task.metrics}
        )
        for best in self.val_best.values():
            best.persistent(True)  # resumed runs keep their best so far
        self.val_loss = MeanMetric()
        # every validation's values by training step ({"step": 250, "val/loss": ...}): learning curves
        self.val_history: list[dict[str, float]] = []

    def _total_loss(self, loss_task: Tensor, size: int) -> Tensor:
        """Task loss + weighted aux losses of the forward just run; logs the parts."""
        aux = sum_aux_losses(self.net.moe)
        loss = loss_task + weighted_aux_loss(aux, self.aux_loss_coefficients).to(loss_task.device)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/task_loss", loss_task, batch_size=size)
        for name, value in aux.items():
            self.log(f"train/aux/{name}", value, batch_size=size)
        return loss

    def _log_validation(self, values: dict[str, Tensor]) -> None:
        """Logs val/loss and the task's metrics (already reduced over processes: sync_dist
        only silences DDP's warning), and updates the best-so-far values and ``val_history``.
        A task whose metric is the loss itself gets one val/loss."""
        values = {"loss": self.val_loss.compute(), **values}
        self.val_loss.reset()
        for name, value in values.items():
            self.log(f"val/{name}", value, prog_bar=name == self.task.main_metric, sync_dist=True)
        if self.trainer.sanity_checking:
            return
        for name in self.task.metrics:
            self.val_best[name].update(values[name])
            self.log(f"val/{name}_best", self.val_best[name].compute(), sync_dist=True)
        # the ExpertLoad callback's, logged just before (a callback's on_validation_epoch_end runs
        # before the module's) at every validation but the first
        changes = {
            key: float(value) for key, value in self.trainer.callback_metrics.items() if key.endswith("/expert_change")
        }
        entry = {"step": self.global_step, **{f"val/{k}": float(v) for k, v in values.items()}, **changes}
        self.val_history.append(entry)

    def best_metrics(self) -> dict[str, float]:
        """The task's metrics at the validation where its main metric was best (the first of equals),
        so a task's two numbers come from one model; before any validation, each tracker's value.
        (The logged ``val/<metric>_best`` is each metric's own running best.)"""
        main = f"val/{self.task.main_metric}"
        scored = [entry for entry in self.val_history if math.isfinite(entry.get(main, math.nan))]
        if not scored:
            return {name: float(best.compute()) for name, best in self.val_best.items()}
        sign = 1 if metric_mode(self.task.main_metric) == "max" else -1
        best = max(scored, key=lambda entry: sign * entry[main])  # max keeps the first of equals
        return {name: best[f"val/{name}"] for name in self.task.metrics}

    def monitor_modes(self) -> dict[str, str]:
        """The validation keys a checkpoint or early-stopping callback can monitor, each with the
        direction (``min`` or ``max``) in which it gets better."""
        modes = {"val/loss": "min"}
        for name in self.task.metrics:
            modes[f"val/{name}"] = modes[f"val/{name}_best"] = metric_mode(name)
        return modes

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=parameter_groups(self))
        total = self.trainer.estimated_stepping_batches
        warmup = int(self.warmup_ratio * total)
        if self.schedule == "cosine":  # nanoGPT's: half a cosine from lr down to min_lr_ratio * lr
            scheduler = get_cosine_with_min_lr_schedule_with_warmup(
                optimizer, warmup, total, min_lr_rate=self.min_lr_ratio
            )
        else:
            scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clips as Lightning does, except that bf16-mixed clips a fused optimizer's gradients too.
        Lightning's mixed-precision plugin refuses to clip for any optimizer that unscales gradients
        inside its step (fused AdamW), which is right only when a GradScaler scaled the loss: fp16,
        whose combination with a fused optimizer and clipping is refused before training
        (``hypermoe.validation``). bf16 scales nothing, so its gradients are clipped as at full precision."""
        plugin = self.trainer.precision_plugin
        if isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            algorithm = GradClipAlgorithmType(gradient_clip_algorithm or GradClipAlgorithmType.NORM)
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val or 0.0, algorithm)  # without the refusal
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the process count too: a resumed run must keep it (checkpoint_checks.check_resume_world_size)
        checkpoint["hypermoe"] = {**self.run_info, "world_size": self.trainer.world_size}
        # a run resumed after its last validation (stopped in its last batches) still reports it
        checkpoint["val_history"] = self.val_history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_history = checkpoint.get("val_history", [])


_CLASSIFIER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "span_masks", "num_choices")


class ClassifierLitModule(MoELitModule):
    """Trains a MoEClassifier on a GLUE / SuperGLUE task (or the synthetic one)."""

    def __init__(self, net: nn.Module, task: Any, *args, **kwargs):
        super().__init__(net, task, *args, **kwargs)
        self.val_metrics = build_metrics(task, prefix="")

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.net(**{key: batch[key] for key in _CLASSIFIER_INPUTS if key in batch})

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss_task = task_loss(self(batch), batch["labels"], self.task.kind)
        return self._total_loss(loss_task, batch["labels"].shape[0])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch)
        self.val_loss.update(task_loss(logits, batch["labels"], self.task.kind), weight=batch["labels"].shape[0])
        self.val_metrics.update(predictions(logits, self.task.kind), batch["labels"], groups=batch.get("groups"))

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        self._log_validation(values)


def parameter_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on matrices only: biases and LayerNorm weights are not decayed (the BERT recipe),
    nor T5's relative position bias tables, which transformers' Trainer (the Switch recipe's)
    leaves undecayed with every parameter named bias."""
    decay, no_decay = [], []
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            decayed = parameter.dim() >= 2 and not name.endswith("relative_attention_bias.weight")
            (decay if decayed else no_decay).append(parameter)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def next_token_loss(logits: Tensor, input_ids: Tensor) -> Tensor:
    """Mean cross-entropy of predicting token t + 1 from tokens <= t (float32)."""
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())


def target_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the target tokens of a text-to-text batch (labels IGNORE_INDEX at
    padding), in float32."""
    return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


class CausalLMLitModule(MoELitModule):
    """Trains a MoECausalLM on next-token prediction. ``val/perplexity`` is exp of the mean
    next-token cross-entropy over every validation token, without the aux losses."""

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.net(batch["input_ids"], batch.get("attention_mask"))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss_task = next_token_loss(self(batch), batch["input_ids"])
        return self._total_loss(loss_task, batch["input_ids"].shape[0])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        ids = batch["input_ids"]
        self.val_loss.update(next_token_loss(self(batch), ids), weight=ids[:, 1:].numel())  # a mean over tokens

    def on_validation_epoch_end(self) -> None:
        self._log_validation({"perplexity": self.val_loss.compute().exp()})  # val/loss: the mean itself


class Seq2SeqLitModule(MoELitModule):
    """Trains a MoESeq2Seq text-to-text. Validation generates (with the datamodule's
    ``generation_kwargs``: target length, beam width) and scores the decoded text:
    GLUE / SuperGLUE outputs are parsed back to labels and scored by the classification
    metrics (an output that names no label counts as wrong; ``val/invalid`` is their share);
    free-text tasks are scored against their answers (EM / F1, ROUGE). ``predict_step`` generates
    with ``prediction_generation`` (set by whoever predicts, as ``hypermoe.predict`` does: Lightning's
    predict loop over bare dataloaders attaches no datamodule) and returns the labels the texts name."""

    def __init__(self, net: nn.Module, task: Any, *args, tokenizer: Any, **kwargs):
        super().__init__(net, task, *args, **kwargs)
        self.tokenizer = tokenizer
        self.classifies = isinstance(task, Task)
        self.val_metrics = build_metrics(task, prefix="") if self.classifies else build_text_metrics(task.metrics, "")
        self.val_invalid = MeanMetric()
        self.prediction_generation: dict[str, Any] = {}

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.net(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["decoder_attention_mask"])

    def monitor_modes(self) -> dict[str, str]:
        return super().monitor_modes() | ({"val/invalid": "min"} if self.classifies else {})  # a share of errors

    def on_fit_start(self) -> None:
        if self.classifies:  # checkpoints carry it: test predictions need no training file for it
            self.run_info["majority_target"] = self.trainer.datamodule.majority_target

    def _loss(self, batch: dict[str, Any]) -> Tensor:
        return target_loss(self(batch), batch["labels"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._total_loss(self._loss(batch), batch["input_ids"].shape[0])

    def _generate(self, batch: dict[str, Any], generation: dict[str, Any]) -> list[str]:
        generated = self.net.generate(batch["input_ids"], batch["attention_mask"], **generation)
        return self.tokenizer.batch_decode(generated, skip_special_tokens=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[int | float | None]:
        """The label (class index, or score) each generated text names; None where it names none."""
        return [parse_label(self.task, text) for text in self._generate(batch, self.prediction_generation)]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        texts = self._generate(batch, self.trainer.datamodule.generation_kwargs)
        # the teacher-forced pass last: the routing it leaves on the MoE layers is the batch's
        # (generation runs the decoder once per token), which the ExpertLoad callback reads
        self.val_loss.update(self._loss(batch), weight=(batch["labels"] != IGNORE_INDEX).sum())  # a mean over tokens
        if not self.classifies:
            self.val_metrics.update(texts, batch["answers"])
            return
        parsed = [parse_label(self.task, text) for text in texts]
        self.val_invalid.update(torch.tensor([value is None for value in parsed], dtype=torch.float))
        labels = batch["class_label"]
        preds = [
            wrong_answer(self.task, gold) if value is None else value
            for value, gold in zip(parsed, labels.tolist(), strict=True)
        ]
        preds = torch.tensor(preds, dtype=labels.dtype, device=labels.device)
        self.val_metrics.update(preds, labels, groups=batch.get("groups"))

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        if self.classifies:
            self.log("val/invalid", self.val_invalid.compute(), sync_dist=True)
            self.val_invalid.reset()
        self._log_validation(values)


def wrong_answer(task: Task, gold: int | float) -> int | float:
    """What an output that names no label scores as: a wrong class (the next one), or for a
    score the end of the scale farthest from the gold one."""
    if task.kind == "regression":
        return 0.0 if gold > 2.5 else 5.0
    return (int(gold) + 1) % task.num_labels
