"""Train a bin counter: `python scripts/train.py launcher=local experiment=demo`."""

import sys

import hydra
from omegaconf import DictConfig

from bincount.cli import check_overrides, run
from bincount.launchers import launch
from bincount.launchers.container import container_argv


@hydra.main(config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> object:
    return run(launch, cfg)


if __name__ == "__main__":
    check_overrides()
    sys.argv = container_argv(sys.argv)  # in a SageMaker container: --key value -> key=value
    main()
