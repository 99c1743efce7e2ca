"""Search hyperparameters: `python scripts/tune.py -m [tuner=sagemaker] [tuner.pruner=median]`."""

from omegaconf import DictConfig

from bincount.cli import hydra_main
from bincount.tuning.objective import objective


@hydra_main("tune")
def main(cfg: DictConfig) -> object:
    return objective(cfg)


if __name__ == "__main__":
    main()
