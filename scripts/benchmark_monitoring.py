"""What monitoring costs the local endpoint: requests/s and p50/p95 latency with metrics and data
capture on (``serve.metrics=true serve.capture.enabled=true``) vs off, side by side in one run:
`python scripts/benchmark_monitoring.py benchmark.images=../shared/abid/sample/images`.

Both servers are ``scripts/serve.py`` processes, up at once, taking turns for
``benchmark.rounds`` rounds at each concurrency, so background load hits them alike. Without
``model_dir`` the model is an untrained ``benchmark.arch`` (inference costs the same). Results:
a table and ``<output_dir>/benchmark_monitoring.json``.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests.*
from tests.support.servers import running_server  # noqa: E402


def untrained_model(directory: Path, arch: str, image_size: int) -> Path:
    torch.manual_seed(0)
    net = build_resnet(arch, num_classes=5, pretrained=False)
    spec = ModelSpec(arch=arch, image_size=image_size, mean=list(IMAGENET_MEAN),
                     std=list(IMAGENET_STD), counts=[1, 2, 3, 4, 5], name="bench", version="0")
    return export_model(net, spec, directory)


def load(url: str, photos: list[bytes], requests_n: int, concurrency: int) -> list[float]:
    """Send ``requests_n`` photos with ``concurrency`` threads; the latencies in seconds."""
    local = threading.local()
    latencies: list[float] = []

    def one(i: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        start = time.perf_counter()
        answer = session.post(f"{url}/invocations", data=photos[i % len(photos)],
                              headers={"Content-Type": "image/jpeg"}, timeout=120)
        latencies.append(time.perf_counter() - start)
        if answer.status_code != 200:
            raise BincountError(f"{url} answered {answer.status_code}: {answer.text[:200]}")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests_n)))
    return latencies


def benchmark(cfg: DictConfig) -> dict:
    b = cfg.benchmark
    images = sorted(Path(b.images).glob("*.jpg"))[: b.max_images]
    if not images:
        raise BincountError(f"benchmark.images={b.images}: no .jpg files there")
    photos = [p.read_bytes() for p in images]
    out = Path(cfg.paths.output_dir)
    with tempfile.TemporaryDirectory(prefix="bincount-bench-mon-") as tmp, ExitStack() as stack:
        model_dir = Path(cfg.model_dir) if cfg.model_dir else untrained_model(
            Path(tmp) / "model", b.arch, b.image_size)
        common = [f"serve.runtime={b.runtime}"]
        settings = {
            "off": [*common, "serve.metrics=false", "serve.capture.enabled=false"],
            "on": [*common, "serve.metrics=true", "serve.capture.enabled=true",
                   f"serve.capture.dir={Path(tmp) / 'capture'}",
                   f"serve.capture.sampling={b.capture_sampling}"],
        }
        urls = {name: stack.enter_context(running_server(
            model_dir, Path(tmp) / f"logs-{name}", overrides)).url
            for name, overrides in settings.items()}
        results: dict[str, dict[int, list[float]]] = {n: {} for n in settings}
        wall: dict[str, dict[int, float]] = {n: {} for n in settings}
        for concurrency in b.concurrency:
            for url in urls.values():
                load(url, photos, b.warmup, concurrency)
            for _ in range(b.rounds):
                for name, url in urls.items():
                    start = time.perf_counter()
                    latencies = load(url, photos, b.requests, concurrency)
                    wall[name][concurrency] = wall[name].get(concurrency, 0) + \
                        time.perf_counter() - start
                    results[name].setdefault(concurrency, []).extend(latencies)
        scraped = requests.get(f"{urls['on']}/metrics", timeout=10).text
        captured = [line for line in scraped.splitlines()
                    if line.startswith("bincount_capture_records_total")]
    rows = []
    for concurrency in b.concurrency:
        for name in settings:
            lat = np.asarray(results[name][concurrency]) * 1000
            rows.append({"monitoring": name, "concurrency": concurrency,
                         "requests_per_s": len(lat) / wall[name][concurrency],
                         "p50_ms": float(np.percentile(lat, 50)),
                         "p95_ms": float(np.percentile(lat, 95))})
    table = Table(title=f"local endpoint, metrics + capture on vs off ({b.arch} "
                        f"{b.image_size}px, {b.runtime}, {len(photos)} photos, "
                        f"{b.rounds} rounds of {b.requests})")
    for column in ("monitoring", "concurrency", "req/s", "p50 ms", "p95 ms"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["monitoring"], str(row["concurrency"]),
                      f"{row['requests_per_s']:.1f}", f"{row['p50_ms']:.1f}",
                      f"{row['p95_ms']:.1f}")
    Console().print(table)
    print("\n".join(captured))
    result = {"rows": rows, "capture": captured}
    write_json_atomic(out / "benchmark_monitoring.json", result)
    return result


@hydra_main("benchmark_monitoring")
def main(cfg: DictConfig) -> None:
    run(benchmark, cfg)


if __name__ == "__main__":
    main()
