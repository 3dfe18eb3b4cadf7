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
    Both live in checkpoints (every process's first choices, gathered), so a resumed run compares
    with the validation before the stop, and one resumed after its last validation still reports
    its load.

    Reads the routing each validation step leaves on the layers: the step's last forward must
    be the one over the batch (a generating module runs the teacher-forced pass last)."""

    def __init__(self) -> None:
        self.expert_load: dict[str, list[float]] = {}
        self._load_sums: dict[str, Tensor] = {}  # per layer: sum of load x tokens, then the tokens
        # per layer, each validation token's first-choice expert: this validation's batches, and
        # the previous validation's whole, which expert_change compares them with
        self._top_experts: dict[str, list[Tensor]] = {}
        self._previous_top_experts: dict[str, Tensor] = {}
        # for checkpoints: every process's previous first choices, and those a checkpoint restored
        self._by_process: list[dict[str, Tensor]] = [{}]
        self._restored: list[dict[str, Tensor]] | None = None

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
        for name, change in self._expert_changes(trainer, pl_module).items():
            pl_module.log(f"moe/{name}/expert_change", change, sync_dist=True)  # already summed over processes

    def _expert_load_of_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, list[float]]:
        """The pooled load of the validation epoch, summed over processes in one collective call
        (whose shape every process knows from the model alone, even one that saw no batch)."""
        layers = dict(zip(pl_module.net.moe_names, pl_module.net.moe, strict=True))
        routed = [(name, layers[name].num_experts) for name in _routed_names(pl_module)]
        if not routed:
            return {}
        sums = torch.zeros(len(routed), max(experts for _, experts in routed) + 1, device=pl_module.device)
        for row, (name, experts) in enumerate(routed):
            if name in self._load_sums:
                sums[row, : experts + 1] = self._load_sums[name]
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
        return {name: (sums[row, :experts] / sums[row, experts]).tolist() for row, (name, experts) in enumerate(routed)}

    def _expert_changes(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Per layer, the share of validation tokens whose first-choice expert differs from the
        previous validation's (the validation order is fixed, so token i is the same token); none
        at the first validation, nor where some process has no previous validation to compare with
        (a DDP run resumed with another number of processes). Counts are summed over processes in
        one collective call every process makes, whatever it saw."""
        names = _routed_names(pl_module)
        current = {name: torch.cat(parts) for name, parts in self._top_experts.items()}
        previous = self._previous_of_this_process(trainer)
        counts = torch.zeros(len(names), 3, device=pl_module.device)  # changed, routed, comparable
        for row, name in enumerate(names):
            now, before = current.get(name), previous.get(name)
            if now is not None and before is not None and before.shape == now.shape:
                routed = now >= 0
                counts[row, 0] = ((now != before.to(now.device)) & routed).sum()
                counts[row, 1], counts[row, 2] = routed.sum(), 1
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        self._previous_top_experts = {name: now.to("cpu", torch.int16) for name, now in current.items()}
        self._by_process = self._gather_by_process(trainer, pl_module, names)
        return {
            name: float(counts[row, 0] / counts[row, 1].clamp(min=1))
            for row, name in enumerate(names)
            if counts[row, 2] == trainer.world_size
        }

    def _previous_of_this_process(self, trainer: pl.Trainer) -> dict[str, Tensor]:
        """The previous validation's first choices of this process's share of the tokens: its own,
        or, after a resume, its entry in the checkpoint's (which holds every process's)."""
        if self._restored is not None:
            restored, self._restored = self._restored, None
            self._previous_top_experts = restored[trainer.global_rank] if len(restored) == trainer.world_size else {}
        return self._previous_top_experts

    def _gather_by_process(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, names: list[str]
    ) -> list[dict[str, Tensor]]:
        """Every process's first choices, for the checkpoint (which only process 0 writes)."""
        if trainer.world_size == 1:
            return [self._previous_top_experts]
        by_process: list[dict[str, Tensor]] = [{} for _ in range(trainer.world_size)]
        for name in names:
            mine = self._previous_top_experts.get(name, torch.empty(0, dtype=torch.int16))
            lengths = trainer.strategy.all_gather(torch.tensor(len(mine), device=pl_module.device))
            padded = torch.full((int(lengths.max()),), -2, dtype=torch.long, device=pl_module.device)
            padded[: len(mine)] = mine.to(padded)
            gathered = trainer.strategy.all_gather(padded)  # (processes, longest)
            for rank, (row, length) in enumerate(zip(gathered, lengths.tolist(), strict=True)):
                if length:
                    by_process[rank][name] = row[:length].to("cpu", torch.int16)
        return by_process

    def state_dict(self) -> dict[str, Any]:
        return {"expert_load": self.expert_load, "top_experts_by_process": self._by_process}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.expert_load = state_dict["expert_load"]
        # a checkpoint from before every process's were kept holds process 0's alone
        self._restored = state_dict.get("top_experts_by_process", [state_dict.get("top_experts", {})])
        self._by_process = self._restored  # what a save before the next validation writes back


def _routed_names(pl_module: pl.LightningModule) -> list[str]:
    """The MoE layers with experts, in the model's order (the same in every process)."""
    net = pl_module.net
    return [name for name, layer in zip(net.moe_names, net.moe, strict=True) if hasattr(layer, "num_experts")]
