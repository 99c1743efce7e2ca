"""``scripts/benchmark_heads.py`` runs end to end (tiny sizes): both heads, with and without TTA,
on the synthetic set and on the real ABID photos, in one table and one JSON file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import SCRIPTS

pytestmark = pytest.mark.slow


def test_benchmark_compares_the_heads_on_synthetic_and_real_photos(
    tmp_path: Path, sample_dir: Path
) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "benchmark_heads.py"),
         "benchmark.synthetic.per_class=10", "benchmark.synthetic.image_size=32",
         "benchmark.synthetic.epochs=1", f"benchmark.real.sample_dir={sample_dir}",
         "benchmark.real.seeds=[0]", "benchmark.real.image_size=32", "benchmark.real.epochs=1",
         "benchmark.threads=1", f"paths.output_dir={tmp_path / 'out'}",
         f"paths.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "ECE before" in done.stdout and "settled %" in done.stdout
    assert "ordinal vs softmax" in done.stdout
    result = json.loads((tmp_path / "out" / "benchmark_heads.json").read_text())
    assert "torch " in result["machine"] and "cores usable" in result["machine"]
    assert {(r["set"], r["head"], r["tta"]) for r in result["rows"]} == {
        (data, head, tta) for data in ("synthetic", "ABID sample")
        for head in ("softmax", "ordinal") for tta in ("none", "hflip")}
    for row in result["rows"]:
        assert 0 <= row["acc"] <= 1 and row["rmse"] >= 0 and 0 <= row["settled"] <= 1
        assert 0 <= row["ece_before"] <= 1 and 0 <= row["ece_after"] <= 1
    real = [r for r in result["runs"] if r["set"] == "ABID sample"]
    assert real and all(r["test_images"] >= 40 for r in real)  # 20% of the 245 photos of 1-5
