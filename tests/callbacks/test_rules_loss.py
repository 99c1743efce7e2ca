"""The loss-curve rules (bincount/callbacks/rules/loss.py, divergence.py): LossNotDecreasing,
Overfit and Overtraining on fed loss histories, LossDivergence on fed losses and on real tiny
fits (a huge learning rate fires it in the first epoch; a normal run does not)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from bincount.callbacks.rules import read_rules_file
from bincount.callbacks.rules.base import Rule
from bincount.train import train
from tests.callbacks.harness import (
    fake_trainer,
    fired,
    fit,
    loss_output,
    make_rule,
    rule_warnings,
    rules_json,
    tensorboard,
)

MakeCfg = Callable[..., DictConfig]
FIVE_COUNTS = SimpleNamespace(counts=[1, 2, 3, 4, 5])


def feed(rule: Rule, losses: list[float], module: Any = FIVE_COUNTS) -> Any:
    """One training step per loss; returns the trainer."""
    trainer = fake_trainer()
    rule.on_train_start(trainer, module)
    for step, loss in enumerate(losses):
        trainer.global_step = step
        rule.on_train_batch_end(trainer, module, loss_output(loss), None, step)
    return trainer


# LossDivergence


def test_divergence_fires_when_the_median_loss_is_far_above_the_start(
    cfg: DictConfig, tmp_path: Path
) -> None:
    rule = make_rule(cfg, "loss_divergence", factor=3.0, window=4,
                     rules_file=tmp_path / "rules.json")
    feed(rule, [1.6, 9.0, 2.0, 9.0])  # two bad steps of four: the median is 5.5 (3.4x)
    (entry,) = read_rules_file(tmp_path / "rules.json")
    assert entry["step"] == 3
    evidence = entry["evidence"]
    assert evidence["reference"] == pytest.approx(math.log(5), rel=1e-5)  # chance > start
    assert evidence["median_loss"] == 5.5 and evidence["first_step_loss"] == 1.6
    assert "its median over the last 4 steps is 5.5" in entry["message"]
    assert "chance ln(5) = 1.609" in entry["message"]


def test_divergence_ignores_a_single_spike_and_a_high_but_falling_start(
    cfg: DictConfig
) -> None:
    rule = make_rule(cfg, "loss_divergence", factor=3.0, window=4, rules_file=None)
    feed(rule, [1.6, 1.5, 80.0, 1.4, 1.3, 1.2])  # one noisy batch
    assert not rule.fired
    rule = make_rule(cfg, "loss_divergence", factor=3.0, window=4, rules_file=None)
    feed(rule, [20.0, 40.0, 15.0, 10.0, 8.0])  # a bad init that trains: vs its own start
    assert not rule.fired


def test_divergence_without_counts_compares_with_the_first_step(cfg: DictConfig) -> None:
    rule = make_rule(cfg, "loss_divergence", factor=3.0, window=2, rules_file=None)
    feed(rule, [0.1, 0.2, 0.5], module=SimpleNamespace())  # no ln(K): 0.35 > 3 x 0.1
    assert rule.fired


def test_divergence_leaves_non_finite_losses_to_exploding_tensor(cfg: DictConfig) -> None:
    rule = make_rule(cfg, "loss_divergence", factor=3.0, window=2, rules_file=None)
    feed(rule, [1.5, float("nan"), float("inf"), 1.25, 1.0])
    assert not rule.fired and rule.start == 1.5


def test_divergence_can_stop_the_run(cfg: DictConfig) -> None:
    rule = make_rule(cfg, "loss_divergence", stop_training=True, window=2, rules_file=None)
    assert feed(rule, [1.6, 100.0, 200.0]).should_stop


def test_a_resumed_run_keeps_its_starting_loss(cfg: DictConfig) -> None:
    first = make_rule(cfg, "loss_divergence", window=2, rules_file=None)
    feed(first, [1.5, 1.25])
    resumed = make_rule(cfg, "loss_divergence", window=2, rules_file=None)
    resumed.load_state_dict(first.state_dict())
    # Steps after the resume are judged against the run's first step, not against themselves.
    feed(resumed, [30.0, 30.0, 30.0])
    assert resumed.fired and resumed.start == 1.5


@pytest.mark.slow
def test_a_huge_learning_rate_is_caught_in_the_first_epoch(
    make_cfg: MakeCfg, caplog: pytest.LogCaptureFixture, one_thread: None
) -> None:
    """The loss of lr=1000 is finite (no NaN for ExplodingTensor) and orders of magnitude
    above the start; LossDivergence says so a window into the run."""
    caplog.set_level(logging.INFO, logger="bincount.rules")
    cfg = make_cfg("model.optimizer.lr=1000", "rules.loss_divergence.window=4",
                   "rules.exploding_tensor=null", "trainer.max_epochs=1")
    fit(cfg)

    entry = fired(cfg)["LossDivergence"]
    assert (entry["epoch"], entry["step"]) == (0, 4)  # after 4 of the epoch's 6 steps
    assert entry["evidence"]["ratio"] > 100
    assert entry["stopped_training"] is False
    assert "the training loss is diverging" in rule_warnings(caplog)["LossDivergence"]
    events = tensorboard(cfg)
    assert "rules/LossDivergence/text_summary" in events.Tags()["tensors"]
    assert "rules/LossDivergence/loss_ratio" in events.Tags()["scalars"]


@pytest.mark.slow
def test_a_healthy_tiny_run_fires_no_rule(make_cfg: MakeCfg, caplog: pytest.LogCaptureFixture,
                                          one_thread: None) -> None:
    caplog.set_level(logging.INFO, logger="bincount.rules")
    cfg = make_cfg("rules.vanishing_gradient.patience=3", "rules.data_loader_bound.window=4",
                   "rules.loss_divergence.window=4")
    train(cfg)

    assert rules_json(cfg) == []
    assert rule_warnings(caplog) == {}
    # The rules did look: their scalars are in TensorBoard.
    tags = set(tensorboard(cfg).Tags()["scalars"])
    for scalar in ("VanishingGradient/min_mean_abs_grad", "ExplodingTensor/grad_norm",
                   "PoorWeightInitialization/activation_variance_ratio",
                   "DataLoaderBound/data_wait_fraction", "Overfit/val_minus_train_loss",
                   "Overtraining/epochs_without_improvement", "LossDivergence/loss_ratio"):
        assert f"rules/{scalar}" in tags
    report = (Path(cfg.paths.output_dir) / "profile_report.md").read_text()
    assert "No rule fired" in report


# LossNotDecreasing


def test_loss_not_decreasing_compares_window_means_with_the_best(
    cfg: DictConfig, tmp_path: Path
) -> None:
    rule = make_rule(cfg, "loss_not_decreasing", window=2, patience=2, min_decrease_percent=10.0,
                     rules_file=tmp_path / "rules.json")
    # Window means: 2.0, 1.0 (best), 0.95 (< 10% better), 1.5 -> two windows without.
    feed(rule, [2.0, 2.0, 1.2, 0.8, 0.9, 1.0, 1.0])
    assert not rule.fired
    feed(rule, [2.0])
    (entry,) = read_rules_file(tmp_path / "rules.json")
    assert entry["evidence"]["best_window_mean"] == 1.0
    assert entry["evidence"]["best_window_last_step"] == 3
    assert entry["evidence"]["window_means_since"] == [0.95, 1.5]


def test_a_non_finite_window_never_counts_as_progress(cfg: DictConfig) -> None:
    rule = make_rule(cfg, "loss_not_decreasing", window=1, patience=2, rules_file=None)
    feed(rule, [1.0, float("nan"), float("nan")])
    assert rule.fired


# Overfit and Overtraining: one (train_loss, val) pair per epoch


def run_epochs(rule: Rule, pairs: list[tuple[float, float]], monitor: str = "val_loss") -> None:
    for epoch, (train_loss, val) in enumerate(pairs):
        trainer = fake_trainer(current_epoch=epoch, global_step=epoch,
                               callback_metrics={monitor: torch.tensor(val)})
        rule.on_validation_end(trainer, None)  # type: ignore[arg-type]
        trainer.callback_metrics["train_loss_epoch"] = torch.tensor(train_loss)
        rule.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]


def test_overfit_needs_val_up_and_train_down(cfg: DictConfig, tmp_path: Path) -> None:
    rule = make_rule(cfg, "overfit", patience=2, rules_file=tmp_path / "rules.json")
    run_epochs(rule, [(1.0, 1.0), (0.8, 0.9), (0.9, 1.1), (1.0, 1.2)])  # both rise: not overfit
    assert not rule.fired
    run_epochs(rule, [(0.5, 1.3)])
    (entry,) = read_rules_file(tmp_path / "rules.json")
    assert (entry["epoch"], entry["evidence"]["best_epoch"]) == (0, 1)
    assert entry["message"] == ("val_loss rose from 0.9 (epoch 1) to 1.3 over 3 epochs while "
                                "train_loss fell from 0.8 to 0.5")


@pytest.mark.parametrize(("mode", "values", "fires"), [
    ("min", [1.0, 0.9, 0.95, 0.91], True),
    ("min", [1.0, 0.9, 0.95, 0.8], False),
    ("max", [0.5, 0.7, 0.6, 0.65], True),
    ("max", [0.5, 0.7, 0.6, 0.75], False),
])
def test_overtraining_counts_epochs_without_improvement(
    cfg: DictConfig, mode: str, values: list[float], fires: bool
) -> None:
    rule = make_rule(cfg, "overtraining", monitor="val_acc", mode=mode, patience=2,
                     rules_file=None)
    run_epochs(rule, [(1.0, v) for v in values], monitor="val_acc")
    assert rule.fired is fires


def test_overtraining_refuses_an_unknown_mode(cfg: DictConfig) -> None:
    with pytest.raises(InstantiationException,
                       match="rules.overtraining.mode: expected 'min' or 'max', got 'lowest'"):
        make_rule(cfg, "overtraining", mode="lowest")


@pytest.mark.slow
def test_a_single_batch_for_many_epochs_overfits_and_overtrains(
    make_cfg: MakeCfg, caplog: pytest.LogCaptureFixture, one_thread: None
) -> None:
    caplog.set_level(logging.INFO, logger="bincount.rules")
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
