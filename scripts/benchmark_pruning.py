"""Epochs trained and best validation loss of a 16-trial Optuna sweep without and with the
median pruner (same seed, synthetic bins): `python scripts/benchmark_pruning.py`."""

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.tuning.benchmark import benchmark


@hydra_main("benchmark_pruning")
def main(cfg: DictConfig) -> None:
    run(benchmark, cfg)


if __name__ == "__main__":
    main()
