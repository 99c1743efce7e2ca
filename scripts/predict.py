"""Count the items in bin photos:
`python scripts/predict.py images=[a.jpg,b.jpg] model_dir=<run>/model`
(or `predict.url=http://127.0.0.1:8080`, or `predict.endpoint=<SageMaker endpoint>`)."""

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.serving.predict import predict


@hydra_main("predict")
def main(cfg: DictConfig) -> None:
    run(predict, cfg)


if __name__ == "__main__":
    main()
