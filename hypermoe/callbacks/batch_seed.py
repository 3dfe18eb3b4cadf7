"""Reseeding before every training batch, so a resumed run repeats the original's randomness."""

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch


class BatchReseed(pl.Callback):
    """Every training batch draws its dropout (and any router noise) from a stream fixed by
    (seed, epoch, batch), so a run resumed from any checkpoint, mid-epoch too, repeats the
    original. (Lightning's seed_everything would reset ``PL_GLOBAL_SEED``, which seeds dataloader
    workers, and refuses seeds beyond 32 bits, which the mixed one is.)"""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed = (self.seed * 100_003 + trainer.current_epoch) * 1_000_003 + batch_idx
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed % 2**64)  # torch takes 64 bits; the same value below seed 1.8e8
