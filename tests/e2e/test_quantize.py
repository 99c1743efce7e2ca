"""``scripts/quantize.py`` for real (static QDQ int8 on ONNX Runtime), then
``scripts/predict.py ... predict.runtime=int8`` answering from the int8 model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT, SCRIPTS
from tests.support.quantize import labelled_data_dir
from tests.support.serving import make_model_dir

pytestmark = pytest.mark.slow  # two script runs and a real quantization


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


def test_quantize_then_predict_with_the_int8_model(
    model_dir: Path, sample_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    data = labelled_data_dir(model, sample_dir, tmp_path / "data")
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "quantize.py"), f"model_dir={model}",
         f"quantize.data_dir={data}", "quantize.calibration_images=8",
         "quantize.max_accuracy_drop=1", f"paths.output_dir={tmp_path / 'q'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "int8 vs fp32" in done.stdout and "ready to serve" in done.stdout
    record = json.loads((model / "model.json").read_text())
    assert record["int8"]["passed"] and record["int8"]["calibration_images"] == 8
    assert record["int8"]["size_mb"]["int8"] < record["int8"]["size_mb"]["onnx"] / 2
    assert record["onnx"]["real_images"] == 16 and record["onnx"]["passed"]

    images = [str(data / "images" / f"{n:05d}.jpg") for n in (9, 10)]
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "predict.py"), f"model_dir={model}",
         f"images=[{','.join(images)}]", "predict.runtime=int8",
         f"paths.output_dir={tmp_path / 'p'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "runtime int8" in done.stdout
    rows = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert [row["model"] for row in rows] == ["tiny/1", "tiny/1"]
