"""``scripts/benchmark_monitoring.py`` runs end to end (tiny sizes): both servers answer, the
table and JSON hold both settings, and the "on" server captured what it was sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import SCRIPTS

pytestmark = pytest.mark.slow


def test_benchmark_compares_monitoring_on_and_off(tmp_path: Path, sample_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "benchmark_monitoring.py"),
         f"benchmark.images={sample_dir / 'images'}", "benchmark.max_images=4",
         "benchmark.image_size=64", "benchmark.requests=6", "benchmark.warmup=1",
         "benchmark.rounds=1", "benchmark.concurrency=[2]", f"paths.output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "benchmark_monitoring.json").read_text())
    assert [(r["monitoring"], r["concurrency"]) for r in result["rows"]] == [("off", 2), ("on", 2)]
    assert all(r["requests_per_s"] > 0 and r["p50_ms"] > 0 for r in result["rows"])
    assert 'bincount_capture_records_total{outcome="captured"} 7.0' in result["capture"]
