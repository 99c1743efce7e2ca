"""Throughput and p50/p95/p99 latency of the local endpoint per runtime (torch eager, ONNX Runtime
fp32, int8), and of TorchServe under the SageMaker PyTorch inference toolkit serving the same
handlers, at concurrency 1, 8 and 32, in one run:
`python scripts/benchmark_serving.py benchmark.images=../shared/abid/sample/images
benchmark.accuracy_model_dir=<a quantized run>/model benchmark.torchserve=[int8]`.

Without `model_dir` the model is an untrained `benchmark.arch` (inference costs the same as a
trained one), exported with its ONNX model and quantized to int8 on the photos (static QDQ, as
`scripts/quantize.py` does). Our servers are processes of `scripts/serve.py`, all up at once,
taking turns at each concurrency, so background load hits them alike; TorchServe runs after
them, one runtime at a time (the toolkit writes one config, TorchServe keeps one pid file), from
the toolkit's cached virtualenv (`tests/e2e/test_serving_toolkit.py` makes it; Java is needed),
with one worker. The client (one keep-alive HTTP session per thread) shares the CPU with the
servers. With `benchmark.accuracy_model_dir` (a model dir that `scripts/quantize.py` checked,
e.g. the demo's) each runtime's accuracy on its data's test split is measured too, through the
same preprocessing. Results: a table and `<output_dir>/benchmark_serving.json`.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import requests
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from bincount.cli import hydra_main, run
from bincount.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from bincount.errors import BincountError
from bincount.files import write_json_atomic
from bincount.models.backbone import build_resnet
from bincount.models.export import ModelSpec, export_model, load_spec
from bincount.models.onnx import INPUT_NAME, INT8_FILE, ONNX_FILE, update_spec_json
from bincount.serving.handlers import Limits, decode_image
from bincount.serving.package import stage_model_tree
from bincount.serving.quantize import (
    CalibrationReader,
    predict_split,
    quantize_onnx,
    run_data_dir,
    split_items,
    split_metrics,
)
from bincount.serving.runtimes import load_runtime, usable_cpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests.*
from tests.support.net import free_port  # noqa: E402
from tests.support.servers import running_server  # noqa: E402

RESULTS_FILE = "benchmark_serving.json"


@dataclass(frozen=True)
class Row:
    server: str  # bincount (scripts/serve.py) or torchserve (the SageMaker toolkit)
    runtime: str
    batching: bool
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float


def preprocess(images: list[bytes], spec: ModelSpec) -> torch.Tensor:
    transform = eval_transform(spec.image_size, spec.mean, spec.std)
    limits = Limits.from_env()
    return torch.stack([transform(decode_image(data, limits)) for data in images])


def untrained_model_dir(b: DictConfig, dest: Path, images: list[bytes]) -> Path:
    """A randomly initialised model with model.onnx and an int8 model calibrated on the photos
    (accuracy means nothing for it: its int8 record says so and is marked to serve)."""
    counts = [int(count) for count in b.counts]
    torch.manual_seed(0)
    net = build_resnet(str(b.arch), num_classes=len(counts), pretrained=False)
    spec = ModelSpec(
        arch=str(b.arch), image_size=int(b.image_size), mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD), counts=counts, name=f"{b.arch}-untrained", version="benchmark",
    )
    calibration = preprocess(images[: int(b.calibration_images)], spec)
    export_model(net, spec, dest, samples=calibration[:8])
    batches = iter(calibration.split(8))
    quantize_onnx(dest / ONNX_FILE, dest / INT8_FILE, CalibrationReader(INPUT_NAME, batches),
                  per_channel=True)
    update_spec_json(dest, int8={"file": INT8_FILE, "serve": True, "forced": True,
                                 "note": "benchmark model (untrained): accuracy not checked"})
    return dest


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


def measure(url: str, images: list[bytes], count: int, concurrency: int,
            key: tuple[str, str, bool]) -> Row:
    start = time.perf_counter()
    latencies, errors = drive(url, images, count, concurrency)
    seconds = time.perf_counter() - start
    if not latencies:
        raise BincountError(f"every request to {url} failed at concurrency {concurrency}")
    p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    server, runtime, batching = key
    return Row(
        server=server, runtime=runtime, batching=batching, concurrency=concurrency,
        requests=count, errors=errors, seconds=round(seconds, 2),
        throughput=round(len(latencies) / seconds, 2), p50_ms=round(float(p50), 1),
        p95_ms=round(float(p95), 1), p99_ms=round(float(p99), 1),
    )


@contextmanager
def torchserve(model_dir: Path, runtime: str, work: Path) -> Iterator[str]:
    """TorchServe under the SageMaker PyTorch inference toolkit (its ``serving.main()``, as the
    PyTorch inference image starts it) on the artifact ``deploy.py`` would pack."""
    from tests.e2e.test_serving_toolkit import toolkit_venv_dir

    venv = toolkit_venv_dir()
    if not (venv / "ready").is_file():
        raise BincountError(f"the toolkit's virtualenv {venv} is not made yet: run "
                            "pytest tests/e2e/test_serving_toolkit.py once, or leave "
                            "benchmark.torchserve=[]")
    base = work / f"sagemaker-{runtime}"
    stage_model_tree(model_dir, base / "model", runtime)
    (base / "work").mkdir()
    port = free_port()
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port),
           "SAGEMAKER_MODEL_SERVER_WORKERS": "1", "BINCOUNT_RUNTIME": runtime,
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    start = "from sagemaker_pytorch_serving_container import serving; serving.main()"
    log_path = base / "toolkit.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(venv / "bin" / "python"), "-c", start], cwd=base / "work",
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise BincountError(f"TorchServe did not start:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        yield url
    finally:
        subprocess.run([str(venv / "bin" / "torchserve"), "--stop"], env=env, cwd=base / "work",
                       capture_output=True, timeout=60)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def accuracies(model_dir: Path, threads: int) -> dict[str, float]:
    """Each runtime's accuracy on the test split of the data ``model_dir`` was trained on."""
    spec = load_spec(model_dir)
    items = split_items(run_data_dir(model_dir), "test", spec.counts)
    runtimes = {name: load_runtime(model_dir, name, threads) for name in ("torch", "onnx", "int8")}
    probabilities, _ = predict_split(runtimes, [path for path, _ in items], spec, 32)
    labels = np.array([label for _, label in items])
    return {name: split_metrics(p, labels, spec.counts, probabilities["torch"])["accuracy"]
            for name, p in probabilities.items()}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    name = fields.get("Model name", platform.machine()).strip()
    flags = fields.get("Flags", "")
    isa = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name} ({isa})"


def measure_all(servers: dict[tuple[str, str, bool], str], images: list[bytes], b: DictConfig,
                console: Console) -> list[Row]:
    """Warm each server up, then at each concurrency let the servers take turns."""
    for url in servers.values():
        drive(url, images, int(b.warmup), 1)
    rows = []
    for concurrency in b.concurrency:
        for key, url in servers.items():
            row = measure(url, images, int(b.requests), int(concurrency), key)
            rows.append(row)
            console.print(f"{row.server} {row.runtime} batching {row.batching} concurrency "
                          f"{row.concurrency:>2}: {row.throughput:.1f} req/s, p50 {row.p50_ms} ms")
    return rows


def benchmark(cfg: DictConfig) -> list[Row]:
    b = cfg.benchmark
    images = load_jpegs(Path(b.images), int(b.max_images))
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    console = Console(width=160)  # the table's 11 columns, also when piped to a file
    with tempfile.TemporaryDirectory(prefix="bincount-bench-") as tmp:
        model_dir = (Path(cfg.model_dir) if cfg.get("model_dir")
                     else untrained_model_dir(b, Path(tmp) / "model", images))
        log_dir = Path(cfg.paths.output_dir) / "servers"
        with ExitStack() as stack:
            servers: dict[tuple[str, str, bool], str] = {}
            for batching in b.batching:
                for runtime in b.runtimes:
                    overrides = [f"serve.runtime={runtime}", "serve.log_level=warning",
                                 f"serve.batching.enabled={str(bool(batching)).lower()}"]
                    server = stack.enter_context(running_server(model_dir, log_dir, overrides))
                    servers["bincount", str(runtime), bool(batching)] = server.url
            rows += measure_all(servers, images, b, console)
        # One TorchServe at a time (the toolkit writes one config, TorchServe keeps one pid
        # file); ours idle meanwhile.
        for runtime in b.torchserve:
            with torchserve(model_dir, str(runtime), Path(tmp)) as url:
                rows += measure_all({("torchserve", str(runtime), False): url}, images, b,
                                    console)
    threads = usable_cpus()
    accuracy = accuracies(Path(b.accuracy_model_dir), threads) if b.accuracy_model_dir else {}
    return report(cfg, rows, accuracy, load_before, console)


def report(cfg: DictConfig, rows: list[Row], accuracy: dict[str, float], load_before: float,
           console: Console) -> list[Row]:
    b = cfg.benchmark
    # Other work on the machine skews the figures: the 1-minute load average says how much.
    background = f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    machine = (f"{usable_cpus()} CPU cores, {cpu_model()}, "
               f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}; torch {torch.__version__}")
    model = f"{b.arch} at {b.image_size} px" if not cfg.get("model_dir") else str(cfg.model_dir)
    base = {(r.batching, r.concurrency): r.throughput for r in rows
            if r.server == "bincount" and r.runtime == "torch"}
    table = Table(title=f"{model}, {b.requests} requests per row; {machine}", caption=background)
    for column in ("server", "runtime", "batching", "concurrency", "req/s", "x torch",
                   "p50 ms", "p95 ms", "p99 ms", "errors", "test accuracy"):
        table.add_column(column, justify="right")
    for row in rows:
        ratio = base.get((True, row.concurrency)) if row.server == "torchserve" else base.get(
            (row.batching, row.concurrency))
        table.add_row(
            row.server, row.runtime, "on" if row.batching else "off", str(row.concurrency),
            f"{row.throughput:.1f}", f"{row.throughput / ratio:.2f}" if ratio else "-",
            f"{row.p50_ms:.1f}", f"{row.p95_ms:.1f}", f"{row.p99_ms:.1f}", str(row.errors),
            f"{accuracy[row.runtime]:.4f}" if row.runtime in accuracy else "-",
        )
    console.print(table)
    out = Path(cfg.paths.output_dir) / RESULTS_FILE
    write_json_atomic(out, {"machine": machine, "model": model, "background": background,
                            "accuracy_model_dir": b.accuracy_model_dir,
                            "test_accuracy": accuracy, "runs": [asdict(row) for row in rows]})
    console.print(f"results: {out}")
    return rows


@hydra_main("benchmark_serving")
def main(cfg: DictConfig) -> None:
    run(benchmark, cfg)


if __name__ == "__main__":
    main()
