"""README "Your own bins", command by command, as processes: a folder per count of real ABID
photos (counts 0-7), checked and split by prepare_data, a tiny model trained on it whose counts
are the folders', its best checkpoint evaluated, predictions streamed to a CSV (resuming it:
tests/serving/test_predict.py), and the model served: the endpoint answers with counts 0-7."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from bincount.serving.inputs import CUSTOM_ATTRIBUTES_HEADER
from tests.support.net import free_port
from tests.support.ownbins import COUNTS, make_folder_set
from tests.support.paths import ROOT
from tests.support.servers import ServerProcess, wait_ready
from tests.support.tiny import METRIC_KEYS

# The README's commands, run from the folder that holds my_bins/ (tiny settings: 2 CPU cores).
COMMANDS = [
    "python scripts/prepare_data.py data=folder data.root=my_bins data.splits=[0.6,0.2,0.2]",
    "python scripts/train.py data=folder data.root=my_bins data.splits=[0.6,0.2,0.2] "
    "paths.output_dir=runs/bins "
    "model.arch=resnet18 model.pretrained=false data.image_size=32 data.batch_size=8 "
    "trainer=cpu trainer.max_epochs=1",
    "python scripts/evaluate.py ckpt_path=runs/bins/checkpoints/best.ckpt",
    "python scripts/predict.py model_dir=runs/bins/model images=my_bins "
    "predict.output=predictions.csv",
    "python scripts/serve.py model_dir=runs/bins/model",
]


def script(command: str) -> list[str]:
    args = shlex.split(command)
    args[0:2] = [sys.executable, str(ROOT / args[1])]
    return args


def environment(cwd: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "BINCOUNT_ROOT": str(cwd)}


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    args = script(command) + ["data.num_workers=0"] * ("train.py" in command)
    return subprocess.run(args, cwd=cwd, env=environment(cwd), capture_output=True, text=True,
                          timeout=240)


def start_server(command: str, cwd: Path) -> ServerProcess:
    """The README's serve command on a free port of 127.0.0.1, ready (it answers /ping)."""
    port = free_port()
    log_path = cwd / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(script(command) + [f"serve.port={port}"], cwd=cwd,
                                   env=environment(cwd), stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_ready(server, timeout=120)
    except BaseException:
        server.stop()
        raise
    return server


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

    evaluated = run(COMMANDS[2], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    [eval_metrics] = (tmp_path / "outputs" / "eval" / "runs").glob("*/metrics.json")
    saved = json.loads(eval_metrics.read_text())
    assert set(saved["test_per_class_acc"]) == {str(c) for c in COUNTS}
    assert "risk-coverage" in evaluated.stdout and "reconciliation" in evaluated.stdout

    predicted = run(COMMANDS[3], tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert sorted(Path(r["image"]).relative_to("my_bins").as_posix()
                  for r in rows) == sorted(labels)
    for row in rows:
        assert set(json.loads(row["probabilities"])) == {str(c) for c in COUNTS}
        assert int(row["count"]) in COUNTS and not row["error"]

    # Served: the endpoint's JSON carries the counts 0-7, and a verdict for an expected count.
    photo = (tmp_path / "my_bins" / min(p for p, c in labels.items() if c == 7)).read_bytes()
    server = start_server(COMMANDS[4], tmp_path)
    try:
        answer = requests.post(f"{server.url}/invocations", data=photo, timeout=30,
                               headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        assert list(answer.json()["probabilities"]) == [str(c) for c in COUNTS]
        assert answer.json()["count"] in COUNTS
        checked = requests.post(f"{server.url}/invocations", data=photo, timeout=30, headers={
            "Content-Type": "image/jpeg", CUSTOM_ATTRIBUTES_HEADER: "expected=7"}).json()
        assert checked["expected"] == 7 and checked["verdict"] in {"match", "mismatch", "review"}
        assert checked["p_expected"] == pytest.approx(checked["probabilities"]["7"], abs=1e-6)
    finally:
        code = server.stop()
    assert code == 0, server.log()[-3000:]
