"""README "Your own bins", command by command, as processes: a folder per count of real ABID
photos (counts 0-7), checked and split by prepare_data, a tiny model trained on it whose counts
are the folders', and predictions streamed to a CSV (resuming it: tests/serving/test_predict.py)."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ownbins import COUNTS, make_folder_set
from tests.support.paths import ROOT
from tests.support.tiny import METRIC_KEYS

# The README's commands, run from the folder that holds my_bins/ (tiny settings: 2 CPU cores).
COMMANDS = [
    "python scripts/prepare_data.py data=folder data.root=my_bins data.splits=[0.6,0.2,0.2]",
    "python scripts/train.py data=folder data.root=my_bins data.splits=[0.6,0.2,0.2] "
    "paths.output_dir=runs/bins "
    "model.arch=resnet18 model.pretrained=false data.image_size=32 data.batch_size=8 "
    "trainer=cpu trainer.max_epochs=1",
    "python scripts/predict.py model_dir=runs/bins/model images=my_bins "
    "predict.output=predictions.csv",
]


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    args[0:2] = [sys.executable, str(ROOT / args[1])]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "BINCOUNT_ROOT": str(cwd)}
    return subprocess.run(args + ["data.num_workers=0"] * ("train.py" in command), cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=240)


def test_the_readme_shows_these_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Your own bins" in readme
    for command in COMMANDS:
        assert command in " ".join(readme.split()), command


@pytest.mark.slow
def test_your_own_bins_from_a_folder_per_count(sample_dir: Path, tmp_path: Path) -> None:
    labels = make_folder_set(sample_dir, tmp_path / "my_bins")
    prepared = run(COMMANDS[0], tmp_path)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    manifest = json.loads((tmp_path / "my_bins" / "splits.json").read_text())
    assert {e["path"]: e["count"] for e in manifest["images"]} == labels

    trained = run(COMMANDS[1], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = tmp_path / "runs" / "bins"
    assert json.loads((run_dir / "model" / "model.json").read_text())["counts"] == COUNTS
    assert set(json.loads((run_dir / "metrics.json").read_text())) >= METRIC_KEYS

    predicted = run(COMMANDS[2], tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert sorted(Path(r["image"]).relative_to("my_bins").as_posix()
                  for r in rows) == sorted(labels)
    for row in rows:
        assert set(json.loads(row["probabilities"])) == {str(c) for c in COUNTS}
        assert int(row["count"]) in COUNTS and not row["error"]
