"""Train a model: ``python train.py model=hypermoe data=superglue data.task=rte``."""

import hydra
from omegaconf import DictConfig

import hypermoe.config  # noqa: F401  (registers the config resolvers)
from hypermoe.cli import exit_on_expected_errors
from hypermoe.library_noise import silence_library_noise
from hypermoe.train import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    silence_library_noise()
    with exit_on_expected_errors():  # one readable message and an exit code, not a traceback
        metrics = run(cfg)
    # what a sweeper optimises: the task's selection metric, best over epochs
    return metrics["best"][metrics["main_metric"]]


if __name__ == "__main__":
    main()
