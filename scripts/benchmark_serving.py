"""Throughput and p50/p95/p99 latency of the local endpoint at concurrency 1, 8 and 32, with
micro-batching on and off: `python scripts/benchmark_serving.py
benchmark.images=../shared/abid/sample/images`."""

import hydra
from omegaconf import DictConfig

from bincount.cli import check_overrides, run
from bincount.serving.benchmark import benchmark


@hydra.main(config_path="../conf", config_name="benchmark_serving")
def main(cfg: DictConfig) -> None:
    run(benchmark, cfg)


if __name__ == "__main__":
    check_overrides()
    main()
