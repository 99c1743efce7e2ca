"""Test-split metrics of a checkpoint: counting, calibration, risk-coverage, reconciliation.

`python scripts/evaluate.py ckpt_path=<run>/checkpoints/best.ckpt [tta=hflip]`
"""

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.evaluate import evaluate


@hydra_main("eval")
def main(cfg: DictConfig) -> None:
    run(evaluate, cfg)


if __name__ == "__main__":
    main()
