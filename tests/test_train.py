"""The training recipe end to end on tiny synthetic bins: what a run leaves behind, evaluation,
resuming, errors, distributed training."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bincount.errors import BincountError
from bincount.evaluate import evaluate
from bincount.models.export import load_model
from bincount.train import TrainingFailed, train
from tests.support.tiny import METRIC_KEYS


def test_a_run_leaves_metrics_checkpoints_logs_and_a_servable_model(
    cfg: DictConfig, make_cfg: Callable[..., DictConfig], capsys: pytest.CaptureFixture[str]
) -> None:
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
    baseline = json.loads((out / "model" / "baseline.json").read_text())  # for scripts/monitor.py
    assert baseline and (out / "model" / "baseline_embeddings.npy").is_file()

    # Calibrated: the temperature and the reconciliation thresholds fitted on val are served.
    assert spec.temperature == pytest.approx(saved["temperature"]) and spec.temperature > 0
    assert set(spec.reconcile) == {"match_threshold", "mismatch_threshold", "match_precision",
                                   "mismatch_precision"}
    assert spec.reconcile["match_precision"] == 0.95
    # ... and those fitted on mirror-averaged val probabilities, for a server with tta=hflip.
    assert set(spec.reconcile_hflip) == set(spec.reconcile)
    assert saved["reconcile_match_threshold"] == spec.reconcile["match_threshold"]
    for key in ("val_ece", "val_ece_calibrated", "test_ece", "test_ece_calibrated"):
        assert 0.0 <= saved[key] <= 1.0, key
    assert saved["reconcile_settled"] + saved["reconcile_review"] == pytest.approx(1.0)
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"

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
    assert {"val_confusion_matrix", "val_predictions", "reliability"} <= set(
        events.Tags()["images"])
    # one per epoch (the best checkpoint's is its epoch's)
    assert len(events.Images("val_confusion_matrix")) == cfg.trainer.max_epochs
    assert "test_acc" in scalars  # the best checkpoint's test metrics, with the hparams
    hparams = [p for p in (out / "tensorboard").glob("events.*") if b"hparams" in p.read_bytes()]
    assert hparams, "the hyperparameters with the final metrics are in TensorBoard"

    # Evaluating the best checkpoint with the mirror averaged in: the same temperature (fitted on
    # the same val split), the two tables, the plots beside metrics.json.
    capsys.readouterr()
    evaluated = evaluate(make_cfg(f"ckpt_path={out / 'checkpoints' / 'best.ckpt'}", "tta=hflip",
                                  f"paths.output_dir={out / 'eval'}", name="eval", tiny=False))
    printed = capsys.readouterr().out
    assert evaluated["temperature"] == pytest.approx(spec.temperature)
    assert evaluated["tta"] == "hflip" and 0.0 <= evaluated["test_acc_tta"] <= 1.0
    assert list(evaluated["test_risk_coverage"]) == ["100%", "80%", "60%", "40%", "20%"]
    assert "risk-coverage (test split, tta=hflip)" in printed
    assert "reconciliation (test split" in printed and "settled automatically" in printed
    assert json.loads((out / "eval" / "metrics.json").read_text())["reconcile_pairs"] > 0
    for png in ("risk_coverage.png", "reliability.png"):
        assert (out / "eval" / png).read_bytes()[:4] == b"\x89PNG"

    # A checkpoint written before model.head and data.source existed still evaluates, alike.
    old = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    del old["hyper_parameters"]["head"]
    for key in ("source", "root", "table"):
        del old["datamodule_hyper_parameters"][key]
    torch.save(old, out / "old.ckpt")
    again = evaluate(make_cfg(f"ckpt_path={out / 'old.ckpt'}", f"paths.output_dir={out / 'old'}",
                              name="eval", tiny=False))
    assert again["test_acc"] == pytest.approx(evaluated["test_acc"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.optimizer.lr=-1", "model.optimizer: Invalid learning rate: -1"),
        ("data.batch_size=abc", "data.batch_size: expected an integer >= 1, got 'abc'"),
        ("trainer.max_epochs=0", "trainer.max_epochs: expected an integer >= 1"),
        ("model.freeze_backbone=maybe", "model.freeze_backbone: expected true or false"),
        ("reconcile.match_precision=1.5",
         "reconcile.match_precision: expected a precision between 0 and 1 (exclusive), got 1.5"),
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

@pytest.mark.slow
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



def test_a_diverged_run_fails_exports_nothing_and_records_why(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg("model.optimizer.lr=1e6", "trainer.max_epochs=1")
    with pytest.raises(TrainingFailed) as err:
        train(cfg)
    assert "no model was exported" in str(err.value)
    assert err.value.exit_code != 0
    out = Path(cfg.paths.output_dir)
    assert not (out / "model").exists()
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # valid JSON
    saved = json.loads(text)
    assert saved["status"] == "failed" and "ExplodingTensor" in saved["failure"]


def test_last_checkpoint_is_the_end_of_the_last_epoch_even_when_it_was_not_the_best(
    make_cfg: Callable[..., DictConfig],
) -> None:
    # The lowest epoch is the best: best.ckpt stays at epoch 0, where Lightning's own save_last
    # would have left last.ckpt too; a resume must start at epoch 3.
    cfg = make_cfg("trainer.max_epochs=3", "callbacks.model_checkpoint.monitor=epoch",
                   "callbacks.model_checkpoint.mode=min", "callbacks.validation_figures=null")
    train(cfg)
    checkpoints = Path(cfg.paths.checkpoint_dir)
    last = torch.load(checkpoints / "last.ckpt", weights_only=True, map_location="cpu")
    best = torch.load(checkpoints / "best.ckpt", weights_only=True, map_location="cpu")
    assert last["epoch"] == 2 and best["epoch"] < last["epoch"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
