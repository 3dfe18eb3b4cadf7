"""Each MoE layer's expert load over a validation, and how many tokens changed expert since the last one."""

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor


class ExpertLoad(pl.Callback):
    """After every validation (not the sanity check): ``expert_load``, per MoE layer each
    expert's share of the validation tokens it routed (``routing_stats["load"]`` pooled by tokens
    over batches and processes), and the logged ``moe/<layer name>/expert_change``, the share of
    validation tokens whose first-choice expert differs from the previous validation's.
    Both live in checkpoints, so a resumed run compares with the validation before the stop,
    and one resumed after its last validation still reports its load.

    Reads the routing each validation step leaves on the layers: the step's last forward must
    be the one over the batch (a generating module runs the teacher-forced pass last)."""

    def __init__(self) -> None:
        self.expert_load: dict[str, list[float]] = {}
        self._load_sums: dict[str, Tensor] = {}  # per layer: sum of load x tokens, then the tokens
        # per layer, each validation token's first-choice expert: this validation's batches, and
        # the previous validation's whole, which expert_change compares them with
        self._top_experts: dict[str, list[Tensor]] = {}
        self._previous_top_experts: dict[str, Tensor] = {}

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._load_sums = {}
        self._top_experts = {}

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        for name, layer in zip(pl_module.net.moe_names, pl_module.net.moe, strict=True):
            stats = layer.routing_stats
            if "load" in stats:  # the dense ffn has none
                weighted = torch.cat([stats["load"] * stats["tokens"], stats["tokens"].view(1)])
                self._load_sums[name] = self._load_sums.get(name, 0) + weighted
            if getattr(layer, "top_expert", None) is not None:
                self._top_experts.setdefault(name, []).append(layer.top_expert)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.expert_load = self._expert_load_of_epoch(trainer, pl_module)
        for name, change in self._expert_changes(trainer).items():
            pl_module.log(f"moe/{name}/expert_change", change, sync_dist=True)  # already summed over processes

    def _expert_load_of_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, list[float]]:
        """The pooled load of the validation epoch, summed over processes in one collective call
        (whose shape every process knows from the model alone, even one that saw no batch)."""
        net = pl_module.net
        routed = [(name, layer.num_experts) for name, layer in zip(net.moe_names, net.moe, strict=True)
                  if hasattr(layer, "num_experts")]  # fmt: skip
        if not routed:
            return {}
        sums = torch.zeros(len(routed), max(experts for _, experts in routed) + 1, device=pl_module.device)
        for row, (name, experts) in enumerate(routed):
            if name in self._load_sums:
                sums[row, : experts + 1] = self._load_sums[name]
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
        return {name: (sums[row, :experts] / sums[row, experts]).tolist() for row, (name, experts) in enumerate(routed)}

    def _expert_changes(self, trainer: pl.Trainer) -> dict[str, float]:
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
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
            changes[name] = float(counts[0] / counts[1].clamp(min=1))
        self._previous_top_experts = {name: now.to("cpu", torch.int16) for name, now in current.items()}
        return changes

    def state_dict(self) -> dict[str, Any]:
        return {"expert_load": self.expert_load, "top_experts": self._previous_top_experts}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.expert_load = state_dict["expert_load"]
        self._previous_top_experts = state_dict["top_experts"]
