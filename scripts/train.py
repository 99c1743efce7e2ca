"""Train a bin counter: `python scripts/train.py launcher=local experiment=demo`."""

import sys

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.launchers.container import container_argv


@hydra_main("train")
def main(cfg: DictConfig) -> object:
    if cfg.launcher.name == "sagemaker":
        # Submit a SageMaker training job that runs this script on the same config.
        from bincount.launchers.sagemaker import run_job

        return run(run_job, cfg)
    from bincount.train import train  # train here, on this machine's CPU or GPU(s)

    return run(train, cfg)


if __name__ == "__main__":
    sys.argv = container_argv(sys.argv)  # in a SageMaker container: --key value -> key=value
    main()
