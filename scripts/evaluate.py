"""Test-split metrics of a checkpoint.

`python scripts/evaluate.py ckpt_path=<run>/checkpoints/best.ckpt`
"""

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.train import evaluate


@hydra_main("eval")
def main(cfg: DictConfig) -> None:
    run(evaluate, cfg)


if __name__ == "__main__":
    main()
