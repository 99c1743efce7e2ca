"""The Debugger-style rules (conf/rules): each fires on a run built to trigger it, says so once
(a warning, an entry in rules.json, a TensorBoard text entry) and stays silent on a healthy
tiny run."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bincount.callbacks.rules import (
    DataLoaderBound,
    LowGPUUtilization,
    Overfit,
    VanishingGradient,
    read_rules_file,
)
from bincount.models.module import CountModule
from bincount.train import instantiate_group, train

MakeCfg = Callable[..., DictConfig]


def rules_json(cfg: DictConfig) -> list[dict[str, Any]]:
    path = Path(cfg.paths.output_dir) / "rules.json"
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text())


def fired(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    return {entry["rule"]: entry for entry in rules_json(cfg)}


def rule_warnings(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """rule -> the warning it logged (each rule warns at most once)."""
    found: dict[str, str] = {}
    for record in caplog.records:
        if record.name == "bincount.rules" and record.levelno == logging.WARNING:
            rule = record.getMessage().split()[1]
            assert rule not in found, f"{rule} warned twice"
            found[rule] = record.getMessage()
    return found


def tensorboard(cfg: DictConfig) -> EventAccumulator:
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"),
                              size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def fit(cfg: DictConfig, model: CountModule | None = None, datamodule: Any = None,
        **trainer_kwargs: Any) -> pl.Trainer:
    """Fit with the configured rules and logger only (no checkpoints, validation of the
    best model, test or export: what a rule sees is the fit)."""
    pl.seed_everything(cfg.seed, workers=True)  # the same start as train(cfg)
    model = model or instantiate(cfg.model)
    datamodule = datamodule or instantiate(cfg.data)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=instantiate_group(cfg.rules),
        logger=instantiate_group(cfg.logger), enable_checkpointing=False, **trainer_kwargs,
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer


@pytest.fixture(autouse=True)
def _capture_rule_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="bincount.rules")
    yield


pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_healthy_tiny_run_fires_no_rule(make_cfg: MakeCfg,
                                          caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_cfg("rules.vanishing_gradient.patience=3", "rules.data_loader_bound.window=4")
    train(cfg)

    assert rules_json(cfg) == []
    assert rule_warnings(caplog) == {}
    # The rules did look: their scalars are in TensorBoard.
    tags = set(tensorboard(cfg).Tags()["scalars"])
    for scalar in ("VanishingGradient/min_mean_abs_grad", "ExplodingTensor/grad_norm",
                   "PoorWeightInitialization/activation_variance_ratio",
                   "DataLoaderBound/data_wait_fraction", "Overfit/val_minus_train_loss",
                   "Overtraining/epochs_without_improvement"):
        assert f"rules/{scalar}" in tags
    report = (Path(cfg.paths.output_dir) / "profile_report.md").read_text()
    assert "No rule fired" in report


def test_lr_100_diverges_and_the_exploding_rule_stops_the_run(
    make_cfg: MakeCfg, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg("model.optimizer.lr=100", "rules.exploding_tensor.max_grad_norm=1000")
    metrics = train(cfg)

    entry = fired(cfg)["ExplodingTensor"]
    assert entry["stopped_training"] is True
    assert entry["step"] == 1  # the first step is sane; the lr=100 update blows up the next
    assert entry["evidence"]["grad_norm"] > 1000
    (layer, norm), = entry["evidence"]["largest_layer"].items()
    assert layer.startswith("net.") and norm > 0
    assert f"at step 1; largest: {layer}" in entry["message"]
    assert "ExplodingTensor" in rule_warnings(caplog)
    assert any(r.levelno == logging.ERROR and "stops training at step 1" in r.getMessage()
               for r in caplog.records)
    events = tensorboard(cfg)
    # Two of the run's twelve steps ran (the rule logs the gradient norm every step).
    assert [e.step for e in events.Scalars("rules/ExplodingTensor/grad_norm")] == [0, 1]
    # The gradients that tripped the rule never reached the weights: the exported model is
    # the one after the first, sane step.
    weights = torch.load(Path(cfg.paths.model_dir) / "model.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert "rules/ExplodingTensor/text_summary" in events.Tags()["tensors"]
    assert metrics["best_checkpoint"]  # validated and exported as usual


def test_lr_100_loss_not_decreasing(make_cfg: MakeCfg, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_cfg("model.optimizer.lr=100", "rules.loss_not_decreasing.window=1",
                   "rules.loss_not_decreasing.patience=3")
    fit(cfg)

    entry = fired(cfg)["LossNotDecreasing"]
    evidence = entry["evidence"]
    # The first step's loss stays the best: lr=100 throws the weights far off at once.
    assert entry["step"] == 4 and evidence["best_window_last_step"] == 0
    assert all(m > 100 * evidence["best_window_mean"] for m in evidence["window_means_since"])
    assert "has not fallen 0.1% below its best" in rule_warnings(caplog)["LossNotDecreasing"]
    events = tensorboard(cfg)
    assert "rules/LossNotDecreasing/text_summary" in events.Tags()["tensors"]
    assert "rules/LossNotDecreasing/windows_without_decrease" in events.Tags()["scalars"]


def test_a_zeroed_frozen_head_makes_the_gradients_vanish(
    make_cfg: MakeCfg, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg("rules.vanishing_gradient.patience=3", "++trainer.limit_train_batches=4",
                   "++trainer.limit_val_batches=1", "trainer.max_epochs=1")
    pl.seed_everything(cfg.seed)
    model: CountModule = instantiate(cfg.model)
    with torch.no_grad():
        model.net.fc.weight.zero_()  # nothing flows back through a zero head ...
    model.net.fc.weight.requires_grad_(False)  # ... and it stays zero
    fit(cfg, model)

    entry = fired(cfg)["VanishingGradient"]
    assert entry["step"] == 2  # the third step in a row below the threshold
    evidence = entry["evidence"]
    assert evidence["layers_below"] == evidence["layers_monitored"] > 10
    assert "net.conv1.weight" in evidence["mean_abs_grad"]
    assert set(evidence["mean_abs_grad"].values()) == {0.0}
    assert "VanishingGradient" in rule_warnings(caplog)


def test_a_nan_stops_the_run_before_it_reaches_the_weights(
    make_cfg: MakeCfg, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg("++trainer.limit_train_batches=4", "++trainer.limit_val_batches=1")
    pl.seed_everything(cfg.seed)
    model: CountModule = instantiate(cfg.model)
    with torch.no_grad():
        model.net.fc.bias[0] = float("nan")
    conv1 = model.net.conv1.weight.detach().clone()
    trainer = fit(cfg, model)

    assert trainer.global_step == 1  # stopped after one step (of 4)
    entry = fired(cfg)["ExplodingTensor"]
    assert entry["step"] == 0 and entry["stopped_training"] is True
    assert entry["evidence"]["loss"] == "nan"
    assert entry["message"].startswith("the loss is nan at step 0; the gradient of net.")
    assert torch.equal(model.net.conv1.weight, conv1)  # the NaN step was not applied
    assert "ExplodingTensor" in rule_warnings(caplog)


def test_a_badly_scaled_layer_is_poor_weight_initialization(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("rules.poor_weight_initialization.steps=2", "++trainer.limit_train_batches=3",
                   "++trainer.limit_val_batches=1", "trainer.max_epochs=1")
    pl.seed_everything(cfg.seed)
    model: CountModule = instantiate(cfg.model)
    with torch.no_grad():
        for block in model.net.layer2:
            block.bn2.weight.fill_(100.0)  # layer2's residual branch scaled 100x
    fit(cfg, model)

    entry = fired(cfg)["PoorWeightInitialization"]
    evidence = entry["evidence"]
    assert evidence["ratio"] > 10 and entry["step"] == 2
    variances = evidence["median_variance"]
    assert set(variances) == {"net.layer1", "net.layer2", "net.layer3", "net.layer4"}
    assert max(variances, key=variances.get) == "net.layer2"


@pytest.mark.slow
def test_a_single_batch_for_many_epochs_overfits_and_overtrains(
    make_cfg: MakeCfg, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg("debug=overfit", "trainer.max_epochs=10", "rules.overfit.patience=3",
                   "rules.overtraining.patience=4", "rules.overtraining.stop_training=true")
    trainer = fit(cfg)

    rules = fired(cfg)
    overfit, overtraining = rules["Overfit"]["evidence"], rules["Overtraining"]["evidence"]
    assert overfit["val_loss"] > overfit["best_val_loss"]
    assert overfit["train_loss"] < overfit["train_loss_at_best"]
    assert rules["Overtraining"]["epoch"] - overtraining["best_epoch"] >= 4
    # Overtraining was set to stop the run: it ended in the epoch the rule fired.
    assert trainer.current_epoch == rules["Overtraining"]["epoch"] + 1 < 10
    assert {"Overfit", "Overtraining"} <= set(rule_warnings(caplog))
    # The scalar a rule judges by goes on after it fired: one point per epoch.
    gap = tensorboard(cfg).Scalars("rules/Overfit/val_minus_train_loss")
    assert len(gap) == trainer.current_epoch


class SlowLoader:
    """A DataLoader whose batches each take ``factor`` times as long to arrive as the rest of
    the loop took since the previous one (relative, so the test holds on a busy machine too;
    measured between successive requests, so Lightning's prefetching does not matter)."""

    def __init__(self, loader: Any, factor: float) -> None:
        self.loader, self.factor = loader, factor

    def __iter__(self) -> Iterator[Any]:
        requested, slept = None, 0.0
        for batch in self.loader:
            now = time.perf_counter()
            busy = now - requested - slept if requested is not None else 0.1
            slept = min(self.factor * max(busy, 0.05), 5.0)
            time.sleep(slept)
            requested = now
            yield batch

    def __len__(self) -> int:
        return len(self.loader)


def test_a_slow_data_loader_is_data_bound(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("rules.data_loader_bound.window=3", "++trainer.limit_train_batches=4",
                   "++trainer.limit_val_batches=1", "trainer.max_epochs=1", "data.batch_size=4")
    datamodule = instantiate(cfg.data)
    real = datamodule.train_dataloader
    datamodule.train_dataloader = lambda: SlowLoader(real(), factor=3.0)
    fit(cfg, datamodule=datamodule)

    evidence = fired(cfg)["DataLoaderBound"]["evidence"]
    assert evidence["data_wait_fraction"] > 0.5
    assert evidence["mean_wait_ms"] > 2 * evidence["mean_compute_ms"]
    assert evidence["window_steps"] == 3


def test_rules_are_switched_off_one_by_one_or_all(make_cfg: MakeCfg) -> None:
    names = {type(r).__name__ for r in instantiate_group(make_cfg().rules)}
    assert names == {"VanishingGradient", "ExplodingTensor", "PoorWeightInitialization",
                     "LossNotDecreasing", "Overfit", "Overtraining", "DataLoaderBound",
                     "LowGPUUtilization"}
    off = instantiate_group(make_cfg("rules.overfit=null").rules)
    assert not any(isinstance(r, Overfit) for r in off) and len(off) == 7
    tuned = instantiate_group(make_cfg("rules.vanishing_gradient.threshold=0.01").rules)
    assert next(r for r in tuned if isinstance(r, VanishingGradient)).threshold == 0.01
    cfg = make_cfg("~rules")
    assert "rules" not in cfg
    assert instantiate(cfg.callbacks.profile_report).rules_file is None


def test_gpu_rule_is_inactive_on_cpu(make_cfg: MakeCfg, caplog: pytest.LogCaptureFixture) -> None:
    rule = LowGPUUtilization(window=1)
    rule.on_train_start(pl.Trainer(accelerator="cpu", logger=False), instantiate(
        make_cfg().model))
    assert not rule.active
    assert "LowGPUUtilization is inactive: training runs on cpu" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_idle_gpu_is_low_utilization(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("trainer=gpu", "trainer.precision=32-true",
                   "rules.low_gpu_utilization.window=3",
                   "rules.low_gpu_utilization.threshold_p95=101",  # always below: must fire
                   "++trainer.limit_train_batches=4", "trainer.max_epochs=1")
    fit(cfg)
    evidence = fired(cfg)["LowGPUUtilization"]["evidence"]
    assert evidence["p95"] <= 100 and evidence["window_steps"] == 3


def test_rules_file_errors_name_the_file(tmp_path: Path) -> None:
    from bincount.errors import BincountError

    bad = tmp_path / "rules.json"
    bad.write_text("{not json")
    with pytest.raises(BincountError, match=f"{bad}: not valid JSON"):
        read_rules_file(bad)
    bad.write_text('{"rule": "Overfit"}')
    with pytest.raises(BincountError, match="expected a JSON list"):
        read_rules_file(bad)
    assert read_rules_file(tmp_path / "absent.json") == []
    assert math.isfinite(DataLoaderBound().threshold)
