"""Train a bin counter: `python scripts/train.py launcher=local experiment=demo`."""

import hydra
from omegaconf import DictConfig

from bincount.cli import run
from bincount.launchers import launch


@hydra.main(config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> object:
    return run(launch, cfg)


if __name__ == "__main__":
    main()
