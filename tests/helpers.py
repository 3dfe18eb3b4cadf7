"""Compose the project's Hydra configs in tests, the way train.py would."""

from pathlib import Path

import lightning.pytorch as pl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import hypermoe.config  # noqa: F401  (registers the config resolvers)

CONF = Path(__file__).resolve().parents[1] / "conf"
# a quiet run of the tiny random backbone
QUIET = ["logger=none", "~callbacks.rich_progress_bar", "+trainer.enable_progress_bar=false"]
TINY = ["backbone=bert_tiny", *QUIET]


def compose_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """``conf/<name>.yaml`` with overrides; paths.output_dir points at ``output_dir`` because
    ``${hydra:runtime.output_dir}`` exists only inside a Hydra app."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


class StopAfterEpochs(pl.Callback):
    """Ends fit after ``epochs`` epochs without changing the schedule the configured (longer)
    run computed: a stand-in for a run killed at an epoch boundary."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True
