"""Int8 model for CPU serving, checked for accuracy:
`python scripts/quantize.py model_dir=<run>/model` (writes model.int8.onnx + its check in
model.json; serve it with `scripts/serve.py model_dir=<run>/model serve.runtime=int8`)."""

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.serving.quantize import quantize


@hydra_main("quantize")
def main(cfg: DictConfig) -> None:
    run(quantize, cfg)


if __name__ == "__main__":
    main()
