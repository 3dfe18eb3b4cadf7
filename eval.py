"""Re-test a checkpoint: ``python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt [data=glue data.task=rte]``."""

import hydra
from omegaconf import DictConfig

import hypermoe.config  # noqa: F401  (registers the config resolvers)
from hypermoe.evaluate import run_eval


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_eval(cfg)


if __name__ == "__main__":
    main()
