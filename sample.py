"""Generate text from a language-model checkpoint: ``python sample.py ckpt_path=.../checkpoints/last.ckpt``."""

import hydra
from omegaconf import DictConfig

import hypermoe.config  # noqa: F401  (registers the config resolvers)
from hypermoe.cli import exit_on_expected_errors
from hypermoe.library_noise import silence_library_noise
from hypermoe.sample import run_sample


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    silence_library_noise()
    with exit_on_expected_errors():  # one readable message and an exit code, not a traceback
        run_sample(cfg)


if __name__ == "__main__":
    main()
