"""Throughput and p50/p95/p99 latency of the local endpoint at concurrency 1, 8 and 32, with
micro-batching on and off: `python scripts/benchmark_serving.py
benchmark.images=../shared/abid/sample/images`."""

from omegaconf import DictConfig

from bincount.cli import hydra_main, run
from bincount.serving.benchmark import benchmark


@hydra_main("benchmark_serving")
def main(cfg: DictConfig) -> None:
    run(benchmark, cfg)


if __name__ == "__main__":
    main()
