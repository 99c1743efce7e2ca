"""Epochs trained and best validation loss of a 16-trial Optuna sweep without and with the
median pruner (same seed, synthetic bins): `python scripts/benchmark_pruning.py`."""

import hydra
from omegaconf import DictConfig

from bincount.cli import check_overrides, run
from bincount.tuning.benchmark import benchmark


@hydra.main(config_path="../conf", config_name="benchmark_pruning")
def main(cfg: DictConfig) -> None:
    run(benchmark, cfg)


if __name__ == "__main__":
    check_overrides()
    main()
