"""Search hyperparameters: `python scripts/tune.py -m [tuner=sagemaker] [tuner.pruner=median]`."""

import hydra
from omegaconf import DictConfig

from bincount.cli import check_overrides
from bincount.tuning.objective import objective


@hydra.main(config_path="../conf", config_name="tune")
def main(cfg: DictConfig) -> object:
    return objective(cfg)


if __name__ == "__main__":
    check_overrides()
    main()
