"""Download, check and split the ABID subset.

`python scripts/prepare_data.py prepare.per_class_limit=50 [prepare.cache=true]
[prepare.upload_to=s3://bucket/prefix]`
"""

import sys

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.data.prepare import prepare_data


@hydra_main("prepare_data")
def main(cfg: DictConfig) -> None:
    sys.exit(run(prepare_data, cfg))


if __name__ == "__main__":
    main()
