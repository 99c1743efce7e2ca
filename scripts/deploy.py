"""Deploy a model to a SageMaker endpoint:
`python scripts/deploy.py model_dir=<run>/model deploy.role=<arn> deploy.bucket=<bucket>`;
tear it down with `deploy.delete=true deploy.endpoint_name=<name>`."""

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.serving.deploy import deploy


@hydra_main("deploy")
def main(cfg: DictConfig) -> None:
    run(deploy, cfg)


if __name__ == "__main__":
    main()
