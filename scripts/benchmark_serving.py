"""Throughput and p50/p95/p99 latency of the local endpoint at concurrency 1, 8 and 32, with
micro-batching on and off: `python scripts/benchmark_serving.py
benchmark.images=../shared/abid/sample/images`.

For each micro-batching setting it starts `scripts/serve.py` as its own process, warms it up,
then sends a fixed number of real JPEG requests at each concurrency from a thread pool (one
keep-alive HTTP session per thread). The client runs on the same machine, so it shares the CPU
with the server. Results: a table and `<output_dir>/benchmark_serving.json`.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import requests
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from bincount.cli import hydra_main, run
from bincount.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from bincount.errors import BincountError
from bincount.files import write_json_atomic
from bincount.models.backbone import build_resnet
from bincount.models.export import ModelSpec, export_model
from bincount.serving.server import usable_cpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests.support
from tests.support.servers import running_server  # noqa: E402

RESULTS_FILE = "benchmark_serving.json"


@dataclass(frozen=True)
class Row:
    batching: bool
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float


def untrained_model_dir(b: DictConfig, dest: Path) -> Path:
    """A randomly initialised model: inference costs the same as a trained one."""
    counts = [int(count) for count in b.counts]
    net = build_resnet(str(b.arch), num_classes=len(counts), pretrained=False)
    spec = ModelSpec(
        arch=str(b.arch), image_size=int(b.image_size), mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD), counts=counts, name=f"{b.arch}-untrained", version="benchmark",
    )
    return export_model(net, spec, dest)


def load_jpegs(folder: Path, limit: int) -> list[bytes]:
    files = sorted(folder.glob("*.jpg"))[:limit]
    if not files:
        raise BincountError(f"benchmark.images: {folder} holds no .jpg files (real photos)")
    return [path.read_bytes() for path in files]


def drive(url: str, images: list[bytes], count: int, concurrency: int) -> tuple[list[float], int]:
    """``count`` POSTs at ``concurrency`` in flight; returns latencies (s) and the error count."""
    local = threading.local()
    headers = {"Content-Type": "image/jpeg", "Accept": "application/json"}

    def one(index: int) -> float | None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        start = time.perf_counter()
        answer = session.post(
            f"{url}/invocations", data=images[index % len(images)], headers=headers, timeout=300
        )
        elapsed = time.perf_counter() - start
        return elapsed if answer.status_code == 200 else None

    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(one, range(count)))
    latencies = [value for value in outcomes if value is not None]
    return latencies, len(outcomes) - len(latencies)


def measure(url: str, images: list[bytes], count: int, concurrency: int, batching: bool) -> Row:
    start = time.perf_counter()
    latencies, errors = drive(url, images, count, concurrency)
    seconds = time.perf_counter() - start
    if not latencies:
        raise BincountError(f"every request to {url} failed at concurrency {concurrency}")
    p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return Row(
        batching=batching, concurrency=concurrency, requests=count, errors=errors,
        seconds=round(seconds, 2), throughput=round(len(latencies) / seconds, 2),
        p50_ms=round(float(p50), 1), p95_ms=round(float(p95), 1), p99_ms=round(float(p99), 1),
    )


def benchmark(cfg: DictConfig) -> list[Row]:
    b = cfg.benchmark
    images = load_jpegs(Path(b.images), int(b.max_images))
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bincount-bench-") as tmp:
        model_dir = (Path(cfg.model_dir) if cfg.get("model_dir")
                     else untrained_model_dir(b, Path(tmp) / "model"))
        # One server per setting, both up at once (an idle one costs no CPU), and the settings
        # take turns at each concurrency: a change in background load hits both alike.
        with ExitStack() as stack:
            servers = {}
            for batching in b.batching:
                overrides = [
                    f"serve.batching.enabled={str(bool(batching)).lower()}",
                    f"serve.batching.max_batch_size={int(b.max_batch_size)}",
                    f"serve.batching.max_wait_ms={float(b.max_wait_ms)}",
                    "serve.log_level=warning",
                ]
                log_dir = Path(cfg.paths.output_dir) / "servers"
                servers[bool(batching)] = stack.enter_context(
                    running_server(model_dir, log_dir, overrides=overrides)
                )
            for server in servers.values():
                drive(server.url, images, int(b.warmup), 1)
            for concurrency in b.concurrency:
                for batching, server in servers.items():
                    row = measure(server.url, images, int(b.requests), int(concurrency), batching)
                    rows.append(row)
                    console.print(
                        f"batching {'on ' if row.batching else 'off'} concurrency "
                        f"{row.concurrency:>2}: {row.throughput:.1f} req/s, p50 {row.p50_ms} ms"
                    )
    rows.sort(key=lambda row: (not row.batching, row.concurrency))
    # Other work on the machine skews the figures: the 1-minute load average says how much.
    background = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    machine = (
        f"{usable_cpus()} CPU cores ({platform.processor() or platform.machine()}), "
        f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}; torch {torch.__version__}"
    )
    model = f"{b.arch} at {b.image_size} px" if not cfg.get("model_dir") else str(cfg.model_dir)
    table = Table(
        title=f"local endpoint: {model}, {b.requests} requests per row; {machine}",
        caption=background,
    )
    for column in ("micro-batching", "concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms",
                   "errors"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            "on" if row.batching else "off", str(row.concurrency), f"{row.throughput:.1f}",
            f"{row.p50_ms:.1f}", f"{row.p95_ms:.1f}", f"{row.p99_ms:.1f}", str(row.errors),
        )
    console.print(table)
    out = Path(cfg.paths.output_dir) / RESULTS_FILE
    write_json_atomic(
        out,
        {"machine": machine, "model": model, "background": background,
         "runs": [asdict(row) for row in rows]},
    )
    console.print(f"results: {out}")
    return rows


@hydra_main("benchmark_serving")
def main(cfg: DictConfig) -> None:
    run(benchmark, cfg)


if __name__ == "__main__":
    main()
