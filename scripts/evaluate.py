"""Test-split metrics of a checkpoint.

`python scripts/evaluate.py ckpt_path=<run>/checkpoints/best.ckpt`
"""

import hydra
from omegaconf import DictConfig

from bincount.cli import check_overrides, run
from bincount.train import evaluate


@hydra.main(config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run(evaluate, cfg)


if __name__ == "__main__":
    check_overrides()
    main()
