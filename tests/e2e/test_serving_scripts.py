"""Serving code run as its own process: ``scripts/predict.py`` on a local model directory with a
broken photo, ``code/inference.py`` imported from the model tree alone (as the inference
container does), ``scripts/benchmark_serving.py`` at a tiny size, and what importing the
serving modules leaves alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from bincount.serving import handlers
from bincount.serving.package import stage_model_tree
from tests.support.paths import SCRIPTS
from tests.support.serving import SAMPLE_IDS, make_model_dir

pytestmark = pytest.mark.slow  # each test here starts a Python process that imports torch


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


def test_an_unreadable_photo_is_reported_and_fails_the_predict_script(
    model_dir: Path, sample_dir: Path, tmp_path: Path
) -> None:
    images = tmp_path / "photos"
    images.mkdir()
    for image_id in SAMPLE_IDS:
        shutil.copy(sample_dir / "images" / f"{image_id}.jpg", images)
    broken = images / "broken.jpg"
    broken.write_bytes((images / f"{SAMPLE_IDS[0]}.jpg").read_bytes()[:500])
    done = subprocess.run(
        [
            sys.executable, str(SCRIPTS / "predict.py"), f"images=[{images}]",
            f"model_dir={model_dir}", f"paths.log_dir={tmp_path / 'logs'}",
        ],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "1 of 5 images could not be read" in done.stderr
    assert "broken.jpg" in done.stdout and "error:" in done.stdout
    assert "Traceback" not in done.stderr
    (saved,) = (tmp_path / "logs").rglob("predictions.json")
    rows = json.loads(saved.read_text())
    assert len(rows) == 5
    (failed,) = [row for row in rows if "error" in row]
    assert failed["image"] == str(broken)
    assert "not a decodable image" in failed["error"]


def test_the_code_tree_imports_on_its_own(
    model_dir: Path, sample_dir: Path, tmp_path: Path
) -> None:
    """``code/`` holds everything ``inference.py`` imports from this project: it loads with only
    code/ and the third-party site-packages on the path (no editable install of bincount)."""
    tree = stage_model_tree(model_dir, tmp_path / "model")
    photo = sample_dir / "images" / f"{SAMPLE_IDS[0]}.jpg"
    script = f"""
import json, sys
sys.path[:0] = [{str(tree / "code")!r}, {sysconfig.get_paths()["purelib"]!r}]
import inference, bincount
assert bincount.__file__.startswith({str(tree / "code")!r}), bincount.__file__
assert "fastapi" not in sys.modules and "sagemaker" not in sys.modules
model = inference.model_fn({str(tree)!r})
image = inference.input_fn(open({str(photo)!r}, "rb").read(), "image/jpeg")
body, _ = inference.output_fn(inference.predict_fn(image, model), "application/json")
print(body.decode())
"""
    # -S: no site-packages processing, so the editable install of bincount is not visible.
    done = subprocess.run(
        [sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    model = handlers.model_fn(str(model_dir))
    image = handlers.input_fn(photo.read_bytes(), "image/jpeg")
    expected = json.loads(handlers.output_fn(handlers.predict_fn(image, model), "*/*")[0])
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected


def test_the_serving_benchmark_measures_each_runtime(sample_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, str(SCRIPTS / "benchmark_serving.py"),
            f"benchmark.images={sample_dir / 'images'}", "benchmark.max_images=4",
            "benchmark.arch=resnet18", "benchmark.image_size=32", "benchmark.requests=6",
            "benchmark.warmup=1", "benchmark.concurrency=[1,3]", "benchmark.calibration_images=4",
            f"paths.output_dir={tmp_path / 'run'}",
        ],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    results = json.loads((tmp_path / "run" / "benchmark_serving.json").read_text())
    rows = [(r["server"], r["runtime"], r["concurrency"], r["requests"], r["errors"])
            for r in results["runs"]]
    assert rows == [("bincount", runtime, concurrency, 6, 0)
                    for concurrency in (1, 3) for runtime in ("torch", "onnx", "int8")]
    assert all(0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] for r in results["runs"])


def test_importing_serving_touches_neither_the_sdk_nor_the_environment() -> None:
    """What ``scripts/serve.py``, ``predict.py`` and ``deploy.py`` import, in a fresh process:
    the SageMaker SDK is not imported, its environment variable and logger are left alone."""
    script = """
import logging, os, sys
import bincount.serving, bincount.serving.server, bincount.serving.predict
import bincount.serving.deploy
assert "sagemaker" not in sys.modules, "the SDK was imported"
assert "SAGEMAKER_SUPPRESS_V2_WARNING" not in os.environ
assert logging.getLogger("sagemaker.config").level == logging.NOTSET
"""
    env = {k: v for k, v in os.environ.items() if k != "SAGEMAKER_SUPPRESS_V2_WARNING"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
