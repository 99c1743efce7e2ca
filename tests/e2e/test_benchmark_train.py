"""scripts/benchmark_train.py as a user runs it, at tiny size: one process, its table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT


@pytest.mark.slow
def test_the_benchmark_prints_every_pipeline_side_by_side(tmp_path: Path) -> None:
    tiny = ["--arch", "resnet18", "--image-size", "32", "--photo-size", "48", "--per-class", "10",
            "--batch-size", "4", "--steps", "2", "--warmup", "1", "--device", "cpu",
            "--workers", "0"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark_train.py"), *tiny],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("Machine: ") and "cores usable" in out
    rows = re.findall(r"^\| (jpeg|cache) \| (per image, CPU|batched, device) \| "
                      r"(Lightning|plain PyTorch) \| ([\d.]+) \| ([\d.]+x) \| ([\d.]+)% \| "
                      r"\d+ \| (\d+|-) \| ([\d.]+x|-) \|$",
                      out, flags=re.MULTILINE)
    assert [r[:3] for r in rows] == [
        ("jpeg", "per image, CPU", "Lightning"), ("jpeg", "batched, device", "Lightning"),
        ("cache", "per image, CPU", "Lightning"), ("cache", "batched, device", "Lightning"),
        ("cache", "batched, device", "plain PyTorch")]
    assert rows[0][4] == "1.00x" and all(float(r[3]) > 0 for r in rows)
    assert all(0 <= float(r[5]) < 100 for r in rows)
    assert rows[0][7] == "1.00x" and all(float(r[6]) > 0 for r in rows[:4])  # pipeline alone
    assert rows[4][6:] == ("-", "-")
    assert re.search(r"Lightning overhead \(.*\): [+-][\d.]+% \(goal <= 3%\)", out)
    # The goal ratio is the table's own: the cache + device row over the JPEG + per-image row.
    ratio = re.search(r"input pipeline alone ([\d.]+)x, training ([\d.]+)x \(goal >= 5x\)", out)
    assert ratio and ratio.group(1) == rows[3][7].rstrip("x") and ratio.group(2) == rows[3][4][:-1]
    assert re.search(r"data wait, cache rows: [\d.]+% \(per image\), [\d.]+% \(batched\)", out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("bincount-bench-")]
