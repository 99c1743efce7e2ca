"""The training recipe end to end on tiny synthetic bins: what a run leaves behind, evaluation,
resuming, errors, distributed training."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bincount.cli import refuse_null_groups
from bincount.errors import BincountError
from bincount.models.export import load_model
from bincount.train import evaluate, train

from .conftest import ROOT, TINY

METRIC_KEYS = {
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "test_rmse",
    "test_mae",
    "test_within1_acc",
    "test_per_class_acc",
}


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


def test_a_run_leaves_metrics_checkpoints_logs_and_a_servable_model(cfg: DictConfig) -> None:
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)

    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) >= METRIC_KEYS
    assert set(saved["test_per_class_acc"]) == {"1", "2", "3", "4", "5"}
    assert saved["val_loss"] == pytest.approx(metrics["val_loss"])
    assert 0.0 <= saved["test_acc"] <= 1.0 and saved["test_rmse"] >= 0.0
    assert (out / "checkpoints" / "best.ckpt").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()

    net, spec = load_model(out / "model")  # torch.load(weights_only=True) inside
    assert spec.arch == "resnet18" and spec.image_size == 32 and spec.counts == [1, 2, 3, 4, 5]
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 5)

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "train_loss_step",
        "train_loss_epoch",
        "val_loss",
        "val_acc",
        "val_rmse",
        "train_acc",
    } <= scalars
    assert any(tag.startswith("lr-") for tag in scalars)
    assert {"val_confusion_matrix", "val_predictions"} <= set(events.Tags()["images"])
    # one per epoch, plus the final validation of the best checkpoint
    assert len(events.Images("val_confusion_matrix")) == cfg.trainer.max_epochs + 1
    hparams = [p for p in (out / "tensorboard").glob("events.*") if b"hparams" in p.read_bytes()]
    assert hparams, "the hyperparameters with the final metrics are in TensorBoard"


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
    for key in ("test_acc", "test_rmse", "test_mae", "test_within1_acc", "test_loss"):
        assert tested[key] == pytest.approx(trained[key], abs=1e-6)


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


@pytest.mark.parametrize(("script", "group"), [("train.py", "profiler"), ("tune.py", "tuner")])
def test_a_group_set_to_null_is_answered_with_the_hydra_1_4_spelling(
    tmp_path: Path, script: str, group: str
) -> None:
    result = run_script(script, f"{group}=null", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"remove it with '~{group}'" in result.stderr
    choices = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    assert f"choose one of: {', '.join(choices)}" in result.stderr


def test_a_key_set_to_null_still_reaches_the_config(make_cfg: Callable[..., DictConfig]) -> None:
    refuse_null_groups(["model.optimizer.weight_decay=null", "trainer=cpu"])  # nothing to say
    assert make_cfg("model.optimizer.weight_decay=null").model.optimizer.weight_decay is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.optimizer.lr=-1", "model.optimizer: Invalid learning rate: -1"),
        ("data.batch_size=abc", "data.batch_size: expected an integer >= 1, got 'abc'"),
        ("trainer.max_epochs=0", "trainer.max_epochs: expected an integer >= 1"),
        ("model.freeze_backbone=maybe", "model.freeze_backbone: expected true or false"),
    ],
)
def test_a_bad_setting_names_the_key(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(BincountError, match=re.escape(message)):
        train(make_cfg(override))
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("content", ["text", "state dict"])
def test_evaluating_a_file_that_is_not_a_checkpoint_names_it(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, content: str
) -> None:
    path = tmp_path / "model.pt"
    if content == "text":
        path.write_text("not a checkpoint")
    else:  # what <run>/model/model.pt holds
        torch.save({"fc.weight": torch.zeros(5, 8)}, path)
    with pytest.raises(BincountError, match=f"ckpt_path: {re.escape(str(path))} is not a "):
        evaluate(make_cfg(f"ckpt_path={path}", name="eval", tiny=False))


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


def test_overfit_debug_config_drives_the_loss_down(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg(
        "debug=overfit",
        "trainer.max_epochs=25",
        "callbacks.validation_figures=null",
        "model.scheduler=null",
    )
    metrics = train(cfg)
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard")).Reload()
    losses = [e.value for e in events.Scalars("train_loss_epoch")]
    assert losses[-1] < 0.2 * losses[0]
    assert metrics["epochs"] == 25
