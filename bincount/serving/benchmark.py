"""Load generator for the local endpoint (``scripts/benchmark_serving.py``).

For each micro-batching setting it starts ``scripts/serve.py`` as its own process, warms it up,
then sends a fixed number of real JPEG requests at each concurrency from a thread pool (one
keep-alive HTTP session per thread), and reports throughput and latency percentiles. The
client runs on the same machine, so it shares the CPU with the server.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from bincount.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from bincount.errors import BincountError
from bincount.files import write_json_atomic
from bincount.models.backbone import build_resnet
from bincount.models.export import ModelSpec, export_model
from bincount.serving.local import running_server
from bincount.serving.server import usable_cpus

RESULTS_FILE = "benchmark_serving.json"


@dataclass(frozen=True)
class Run:
    batching: bool
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float


def untrained_model_dir(arch: str, image_size: int, dest: Path) -> Path:
    """A randomly initialised model: inference costs the same as a trained one."""
    net = build_resnet(arch, num_classes=5, pretrained=False)
    spec = ModelSpec(
        arch=arch, image_size=image_size, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
        counts=[1, 2, 3, 4, 5],
        name=f"{arch}-untrained", version="benchmark",
    )
    return export_model(net, spec, dest)


def load_jpegs(folder: Path, limit: int) -> list[bytes]:
    files = sorted(folder.glob("*.jpg"))[:limit]
    if not files:
        raise BincountError(f"benchmark.images: {folder} holds no .jpg files (real photos)")
    return [path.read_bytes() for path in files]


def percentile(sorted_values: list[float], q: float) -> float:
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(q) - 1]


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


def measure(url: str, images: list[bytes], count: int, concurrency: int, batching: bool) -> Run:
    start = time.perf_counter()
    latencies, errors = drive(url, images, count, concurrency)
    seconds = time.perf_counter() - start
    ms = sorted(value * 1000 for value in latencies)
    return Run(
        batching=batching, concurrency=concurrency, requests=count, errors=errors,
        seconds=round(seconds, 2), throughput=round(len(latencies) / seconds, 2),
        p50_ms=round(percentile(ms, 50), 1), p95_ms=round(percentile(ms, 95), 1),
        p99_ms=round(percentile(ms, 99), 1),
    )


def benchmark(cfg: DictConfig) -> list[Run]:
    b = cfg.benchmark
    images = load_jpegs(Path(b.images), int(b.max_images))
    load_before = os.getloadavg()[0]
    runs: list[Run] = []
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bincount-bench-") as tmp:
        if cfg.get("model_dir"):
            model_dir = Path(cfg.model_dir)
        else:
            model_dir = untrained_model_dir(str(b.arch), int(b.image_size), Path(tmp) / "model")
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
                    runs.append(measure(server.url, images, int(b.requests), int(concurrency),
                                        batching))
                    run = runs[-1]
                    console.print(
                        f"batching {'on ' if run.batching else 'off'} concurrency "
                        f"{run.concurrency:>2}: {run.throughput:.1f} req/s, p50 {run.p50_ms} ms"
                    )
    runs.sort(key=lambda run: (not run.batching, run.concurrency))
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
    for run in runs:
        table.add_row(
            "on" if run.batching else "off", str(run.concurrency), f"{run.throughput:.1f}",
            f"{run.p50_ms:.1f}", f"{run.p95_ms:.1f}", f"{run.p99_ms:.1f}", str(run.errors),
        )
    console.print(table)
    out = Path(cfg.paths.output_dir) / RESULTS_FILE
    write_json_atomic(
        out,
        {"machine": machine, "model": model, "background": background,
         "runs": [asdict(r) for r in runs]},
    )
    console.print(f"results: {out}")
    return runs
