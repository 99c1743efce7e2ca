"""Serve a model locally on the SageMaker endpoint contract:
`python scripts/serve.py model_dir=<run>/model` (GET /ping, POST /invocations on 127.0.0.1:8080)."""

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.serving.server import serve


@hydra_main("serve")
def main(cfg: DictConfig) -> None:
    run(serve, cfg)


if __name__ == "__main__":
    main()
