"""LightningModules: the task loss + the weighted aux losses of every MoE layer, metrics, logging.

``MoELitModule`` holds what every task family shares (aux losses, routing statistics,
best-so-far metrics, the optimizer, per-epoch reseeding, the run record in checkpoints);
``ClassifierLitModule`` (GLUE / SuperGLUE heads), ``CausalLMLitModule`` (perplexity) and
``Seq2SeqLitModule`` (text-to-text, generation-based evaluation) add their loss and metrics.
The net exposes ``moe`` (its MoE layers) and ``moe_names``.
"""

import random
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, MinMetric
from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_linear_schedule_with_warmup

from hypermoe.backbones.heads import task_loss
from hypermoe.checkpointing import last_saved_checkpoint
from hypermoe.data.metrics import build_metrics, metric_mode, predictions
from hypermoe.data.sampling import ResumableDataLoader
from hypermoe.data.seq2seq import IGNORE_INDEX
from hypermoe.data.tasks import Task
from hypermoe.data.text2text import parse_label
from hypermoe.data.text_metrics import build_text_metrics
from hypermoe.errors import NonFiniteLossError
from hypermoe.moe import sum_aux_losses, weighted_aux_loss

SCHEDULES = ("linear", "cosine")  # after the warm-up: linear to 0, or cosine to min_lr_ratio * lr


class MoELitModule(pl.LightningModule):
    """Logs ``train/loss`` (total), ``train/task_loss``, ``train/aux/<name>`` (unweighted,
    summed over layers), ``val/loss``, ``val/<metric>`` and ``val/<metric>_best``, and every
    ``routing_log_every`` steps ``moe/<layer name>/<stat>``."""

    def __init__(
        self,
        net: nn.Module,
        task: Any,
        aux_loss_coefficients: dict[str, float],
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_ratio: float,
        schedule: str = "linear",
        min_lr_ratio: float = 0.0,
        routing_log_every: int = 50,
        run_info: dict[str, Any] | None = None,
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"scheduler.schedule={schedule!r} is not one of {list(SCHEDULES)}")
        self.net, self.task = net, task
        self.aux_loss_coefficients = dict(aux_loss_coefficients)
        self.optimizer_factory, self.warmup_ratio = optimizer, warmup_ratio
        self.schedule, self.min_lr_ratio = schedule, min_lr_ratio
        self.routing_log_every = routing_log_every
        self.run_info = run_info or {}  # resolved config, seed, git revision: stored in checkpoints
        self.val_best = nn.ModuleDict(
            {name: MinMetric() if metric_mode(name) == "min" else MaxMetric() for name in task.metrics}
        )
        for best in self.val_best.values():
            best.persistent(True)  # resumed runs keep their best so far
        self.val_loss = MeanMetric()
        # each MoE layer's load per expert (routing_stats["load"]) over the last validation epoch
        self.expert_load: dict[str, list[float]] = {}
        # every validation's values by training step ({"step": 250, "val/loss": ...}): learning curves
        self.val_history: list[dict[str, float]] = []
        self._load_sums: dict[str, Tensor] = {}  # per layer: sum of load x tokens, then the tokens
        # per layer, each validation token's first-choice expert: this validation's batches, and the
        # previous validation's whole, which moe/<layer>/expert_change compares it with
        self._top_experts: dict[str, list[Tensor]] = {}
        self._previous_top_experts: dict[str, Tensor] = {}
        self._resumed_loader_states: list[dict[str, int]] = []  # see on_train_start

    def _total_loss(self, loss_task: Tensor, size: int) -> Tensor:
        """Task loss + weighted aux losses of the forward just run; logs the parts."""
        aux = sum_aux_losses(self.net.moe)
        loss = loss_task + weighted_aux_loss(aux, self.aux_loss_coefficients).to(loss_task.device)
        if not torch.isfinite(loss):  # one host sync per step: the price of stopping at the first bad step
            raise NonFiniteLossError(self._nonfinite_report(loss, loss_task, aux))
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/task_loss", loss_task, batch_size=size)
        for name, value in aux.items():
            self.log(f"train/aux/{name}", value, batch_size=size)
        if self.global_step % self.routing_log_every == 0:
            self._log_routing_stats()
        return loss

    def _nonfinite_report(self, loss: Tensor, loss_task: Tensor, aux: dict[str, Tensor]) -> str:
        """Where the loss broke, what each MoE layer's router did in that forward pass, and what is kept."""
        aux_text = ", ".join(f"{name}={float(value):.4g}" for name, value in aux.items()) or "none"
        lines = [
            f"train/loss is {float(loss)} at step {self.global_step} (epoch {self.current_epoch}); "
            f"task loss {float(loss_task)}, aux losses (unweighted, summed over layers): {aux_text}.",
            "Routing statistics of this step:",
        ]
        for name, layer in zip(self.net.moe_names, self.net.moe, strict=True):
            stats = ", ".join(f"{stat}={_describe(value)}" for stat, value in layer.routing_stats.items())
            lines.append(f"  {name}: {stats or 'no router'}")
        saved = last_saved_checkpoint(self.trainer)
        lines.append(
            f"The last good checkpoint is {saved}; nothing after it was saved."
            if saved
            else "No checkpoint was saved before this step."
        )
        return "\n".join(lines)

    def _log_routing_stats(self) -> None:
        for name, layer in zip(self.net.moe_names, self.net.moe, strict=True):
            for stat, value in layer.routing_stats.items():
                if value.dim() == 0:
                    self.log(f"moe/{name}/{stat}", value)
                else:  # per-expert load: its extremes
                    self.log(f"moe/{name}/{stat}_max", value.max())
                    self.log(f"moe/{name}/{stat}_min", value.min())

    def on_validation_epoch_start(self) -> None:
        self._load_sums = {}
        self._top_experts = {}

    def _add_expert_load(self) -> None:
        """After a validation step's forward over the batch (not generation's steps): each MoE
        layer's load, weighted by the tokens it routed, and each token's first-choice expert."""
        for name, layer in zip(self.net.moe_names, self.net.moe, strict=True):
            stats = layer.routing_stats
            if "load" in stats:  # the dense ffn has none
                weighted = torch.cat([stats["load"] * stats["tokens"], stats["tokens"].view(1)])
                self._load_sums[name] = self._load_sums.get(name, 0) + weighted
            if getattr(layer, "top_expert", None) is not None:
                self._top_experts.setdefault(name, []).append(layer.top_expert)

    def _expert_changes(self) -> dict[str, float]:
        """Per layer, the share of validation tokens whose first-choice expert differs from the
        previous validation's (the validation order is fixed, so token i is the same token); none
        at the first validation. Counts are summed over processes."""
        current = {name: torch.cat(parts) for name, parts in self._top_experts.items()}
        changes = {}
        for name, now in current.items():
            before = self._previous_top_experts.get(name)
            if before is None or before.shape != now.shape:
                continue
            routed = now >= 0
            counts = torch.stack([((now != before.to(now.device)) & routed).sum(), routed.sum()]).float()
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
            changes[name] = float(counts[0] / counts[1].clamp(min=1))
        self._previous_top_experts = {name: now.to("cpu", torch.int16) for name, now in current.items()}
        return changes

    def _expert_load_of_epoch(self) -> dict[str, list[float]]:
        """The pooled load of the validation epoch, summed over processes in one collective call
        (whose shape every process knows from the model alone, even one that saw no batch)."""
        routed = [(name, layer.num_experts) for name, layer in zip(self.net.moe_names, self.net.moe, strict=True)
                  if hasattr(layer, "num_experts")]  # fmt: skip
        if not routed:
            return {}
        sums = torch.zeros(len(routed), max(experts for _, experts in routed) + 1, device=self.device)
        for row, (name, experts) in enumerate(routed):
            if name in self._load_sums:
                sums[row, : experts + 1] = self._load_sums[name]
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        return {name: (sums[row, :experts] / sums[row, experts]).tolist() for row, (name, experts) in enumerate(routed)}

    def _log_validation(self, values: dict[str, Tensor]) -> None:
        """Logs val/loss and the task's metrics (already reduced over processes: sync_dist
        only silences DDP's warning), and updates the best-so-far values, ``expert_load`` and
        ``val_history``. A task whose metric is the loss itself gets one val/loss."""
        values = {"loss": self.val_loss.compute(), **values}
        self.val_loss.reset()
        for name, value in values.items():
            self.log(f"val/{name}", value, prog_bar=name == self.task.main_metric, sync_dist=True)
        if self.trainer.sanity_checking:
            return
        for name in self.task.metrics:
            self.val_best[name].update(values[name])
            self.log(f"val/{name}_best", self.val_best[name].compute(), sync_dist=True)
        self.expert_load = self._expert_load_of_epoch()
        changes = {f"moe/{name}/expert_change": change for name, change in self._expert_changes().items()}
        for key, change in changes.items():
            self.log(key, change, sync_dist=True)  # already summed over processes
        entry = {"step": self.global_step, **{f"val/{k}": float(v) for k, v in values.items()}, **changes}
        self.val_history.append(entry)

    def best_metrics(self) -> dict[str, float]:
        return {name: float(best.compute()) for name, best in self.val_best.items()}

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

    def on_train_start(self) -> None:
        # A checkpoint taken inside an epoch holds where the training dataloader stood
        # (ResumableDataLoader.state_dict); hand it over before the first batch is drawn, so the
        # resumed run goes on with the next batch. Lightning would do this itself, but it builds
        # the dataloader for estimated_stepping_batches (configure_optimizers) before it restores
        # the checkpoint, and then never passes the position on.
        loader = self.trainer.train_dataloader
        for state in self._resumed_loader_states:
            if isinstance(loader, ResumableDataLoader) and state["batches_yielded"] < self.trainer.num_training_batches:
                loader.load_state_dict(state)
        self._resumed_loader_states = []

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Every batch draws its dropout (and any router noise) from a stream fixed by (seed,
        # epoch, batch), so a run resumed from any checkpoint, mid-epoch too, repeats the original.
        seed = (int(self.run_info.get("seed", 0)) * 100_003 + self.current_epoch) * 1_000_003 + batch_idx
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hypermoe"] = self.run_info
        # a run resumed after its last validation (stopped in its last batches) still reports it
        checkpoint["expert_load"] = self.expert_load
        checkpoint["val_history"] = self.val_history
        checkpoint["top_experts"] = self._previous_top_experts

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.expert_load = checkpoint.get("expert_load", {})
        self.val_history = checkpoint.get("val_history", [])
        self._previous_top_experts = checkpoint.get("top_experts", {})
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._resumed_loader_states = fit_loop.get("state_dict", {}).get("combined_loader", [])


def _describe(value: Tensor) -> str:
    return f"{float(value):.4g}" if value.dim() == 0 else f"max {float(value.max()):.4g} min {float(value.min()):.4g}"


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
        self._add_expert_load()
        self.val_loss.update(task_loss(logits, batch["labels"], self.task.kind), weight=batch["labels"].shape[0])
        self.val_metrics.update(predictions(logits, self.task.kind), batch["labels"], groups=batch.get("groups"))

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        self._log_validation(values)


def parameter_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on matrices only: biases and LayerNorm weights are not decayed (the BERT recipe)."""
    decay, no_decay = [], []
    for parameter in module.parameters():
        if parameter.requires_grad:
            (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def next_token_loss(logits: Tensor, input_ids: Tensor) -> Tensor:
    """Mean cross-entropy of predicting token t + 1 from tokens <= t (float32)."""
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())


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
        self._add_expert_load()

    def on_validation_epoch_end(self) -> None:
        self._log_validation({"perplexity": self.val_loss.compute().exp()})  # val/loss: the mean itself


class Seq2SeqLitModule(MoELitModule):
    """Trains a MoESeq2Seq text-to-text. Validation generates (with the datamodule's
    ``generation_kwargs``: target length, beam width) and scores the decoded text:
    GLUE / SuperGLUE outputs are parsed back to labels and scored by the classification
    metrics (an output that names no label counts as wrong; ``val/invalid`` is their share);
    free-text tasks are scored against their answers (EM / F1, ROUGE)."""

    def __init__(self, net: nn.Module, task: Any, *args, tokenizer: Any, **kwargs):
        super().__init__(net, task, *args, **kwargs)
        self.tokenizer = tokenizer
        self.classifies = isinstance(task, Task)
        self.val_metrics = build_metrics(task, prefix="") if self.classifies else build_text_metrics(task.metrics, "")
        self.val_invalid = MeanMetric()

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.net(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["decoder_attention_mask"])

    def _loss(self, batch: dict[str, Any]) -> Tensor:
        logits = self(batch)
        return nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=IGNORE_INDEX
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._total_loss(self._loss(batch), batch["input_ids"].shape[0])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.val_loss.update(self._loss(batch), weight=(batch["labels"] != IGNORE_INDEX).sum())  # a mean over tokens
        self._add_expert_load()  # of the teacher-forced pass: generation runs the decoder once per token
        generation = self.trainer.datamodule.generation_kwargs
        generated = self.net.generate(batch["input_ids"], batch["attention_mask"], **generation)
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
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
