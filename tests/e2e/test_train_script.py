"""scripts/train.py and scripts/evaluate.py as a user runs them: a process each, on tiny synthetic
bins: the run dir, evaluation, errors with exit 2, resume after SIGKILL, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bincount.runlock import output_dir_lock
from tests.support.paths import ROOT
from tests.support.tiny import METRIC_KEYS, TINY


def run_script(
    script: str, *args: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def script_args(tmp_path: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [f"paths.root_dir={tmp_path}", f"paths.cache_dir={cache_dir}", *TINY, *extra]


@pytest.mark.slow
def test_script_writes_its_resolved_config_into_the_run_dir(
    tmp_path: Path, cache_dir: Path
) -> None:
    result = run_script(
        "train.py",
        *script_args(tmp_path, cache_dir, "trainer.max_epochs=1", "model.optimizer.lr=0.0042"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert "lr: 0.0042" in (run / ".hydra" / "config.yaml").read_text()
    assert (run / "metrics.json").is_file() and (run / "model" / "model.pt").is_file()
    assert "val_loss=" in result.stdout and "test" in result.stdout  # metric lines + table
    assert str(run / "model") in result.stdout  # where the exported model went
    printed = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert list(Path(printed["tensorboard"].split("--logdir ")[1]).glob("events.*"))

    evaluated = run_script(
        "evaluate.py",
        f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
        f"paths.output_dir={tmp_path / 'eval'}",
        "trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    trained = json.loads((run / "metrics.json").read_text())
    tested = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("test_acc", "test_rmse", "test_mae", "test_within1_acc", "test_loss",
                "temperature", "test_ece", "test_ece_calibrated", "reconcile_settled"):
        assert tested[key] == pytest.approx(trained[key], abs=1e-6)
    assert "risk-coverage (test split, tta=none)" in evaluated.stdout
    assert "reconciliation (test split" in evaluated.stdout
    assert "ece calibrated" in evaluated.stdout and "ece calibrated" in result.stdout
    assert (tmp_path / "eval" / "risk_coverage.png").is_file()
    assert (tmp_path / "eval" / "reliability.png").is_file() and (run / "reliability.png").is_file()

@pytest.mark.slow
def test_missing_data_stops_at_once_with_the_directory_and_the_fix(tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        f"paths.root_dir={tmp_path}",
        "model.pretrained=false",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert str((tmp_path / "data" / "abid").resolve()) in result.stderr
    assert "python scripts/prepare_data.py" in result.stderr
    assert "Traceback" not in result.stderr

@pytest.mark.slow
@pytest.mark.parametrize(("script", "group"), [("train.py", "profiler"), ("tune.py", "tuner")])
def test_a_group_set_to_null_is_answered_with_the_way_to_remove_it(
    tmp_path: Path, script: str, group: str
) -> None:
    result = run_script(script, f"{group}=null", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"remove it with '~{group}'" in result.stderr
    choices = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    assert f"choose one of: {', '.join(choices)}" in result.stderr

@pytest.mark.slow
def test_unknown_override_is_refused(tmp_path: Path) -> None:
    result = run_script("train.py", "model.optimzer.lr=0.1", cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "optimzer" in result.stderr

@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_to_the_same_model(tmp_path: Path, cache_dir: Path) -> None:
    args = script_args(
        tmp_path,
        cache_dir,
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        "data.synthetic.per_class=24",
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert (
        run_script("train.py", *args, f"paths.output_dir={straight}", cwd=tmp_path).returncode == 0
    )

    command = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        *args,
        f"paths.output_dir={resumed}",
    ]
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = resumed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the second epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (resumed / "metrics.json").exists(), "the run was killed before it finished"
    epoch_at_kill = torch.load(last, weights_only=True, map_location="cpu")["epoch"]
    assert epoch_at_kill < 2

    again = run_script("train.py", *args, f"paths.output_dir={resumed}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    a = torch.load(straight / "model" / "model.pt", weights_only=True)
    b = torch.load(resumed / "model" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma = json.loads((straight / "metrics.json").read_text())
    mb = json.loads((resumed / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert ma[key] == mb[key]

@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_output_dir(tmp_path: Path, cache_dir: Path) -> None:
    result = run_script(
        "train.py",
        *script_args(
            tmp_path,
            cache_dir,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_epochs=1",
        ),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "metrics.json").is_file()
    assert (runs[0] / "train_ddp_process_1.log").is_file()  # the second rank logged there too


@pytest.mark.slow
def test_a_second_run_into_the_same_output_dir_exits_2(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "shared_run"
    args = [*script_args(tmp_path, cache_dir), f"paths.output_dir={out}"]
    with output_dir_lock(out):  # a run in progress (this process) holds the output dir
        second = run_script("train.py", *args, cwd=tmp_path, timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"paths.output_dir: {out} is in use by another run (pid {os.getpid()}" in second.stderr
    assert "Traceback" not in second.stderr
    assert not (out / "checkpoints").exists()  # it stopped before training


@pytest.mark.slow
def test_a_diverging_run_exits_1_and_exports_no_model(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "diverged"
    result = run_script("train.py", *script_args(tmp_path, cache_dir, "model.optimizer.lr=1e6",
                                                 "trainer.max_epochs=1"),
                        f"paths.output_dir={out}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "error: training failed: rule ExplodingTensor stopped training" in result.stderr
    assert not (out / "model").exists()
    assert json.loads((out / "metrics.json").read_text())["status"] == "failed"
