"""Drift report of a deployed model's captured traffic against its training baseline:
`python scripts/monitor.py model_dir=<run>/model capture=<dir or s3://bucket/prefix>`
(writes monitor_report.md/.html; exits 3 when a threshold is crossed)."""

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.monitoring.monitor import monitor


@hydra_main("monitor")
def main(cfg: DictConfig) -> None:
    run(monitor, cfg)


if __name__ == "__main__":
    main()
