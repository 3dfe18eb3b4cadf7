"""Re-test a checkpoint: ``python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt [data=glue data.task=rte]``."""

import hydra
from omegaconf import DictConfig

import hypermoe.config  # noqa: F401  (registers the config resolvers)
from hypermoe.cli import exit_on_expected_errors
from hypermoe.evaluate import run_eval
from hypermoe.library_noise import silence_library_noise


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    silence_library_noise()
    with exit_on_expected_errors():  # one readable message and an exit code, not a traceback
        run_eval(cfg)


if __name__ == "__main__":
    main()
