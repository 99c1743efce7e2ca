"""Train a bin counter: `python scripts/train.py launcher=local experiment=demo`."""

import sys

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.launchers import launch
from bincount.launchers.container import container_argv


@hydra_main("train")
def main(cfg: DictConfig) -> object:
    return run(launch, cfg)


if __name__ == "__main__":
    sys.argv = container_argv(sys.argv)  # in a SageMaker container: --key value -> key=value
    main()
