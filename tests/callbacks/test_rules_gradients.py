"""VanishingGradient and ExplodingTensor (bincount/callbacks/rules/gradients.py): unit tests on
hand-set gradients, and real tiny fits (slow) where the gradients come from Lightning's loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from bincount.callbacks.rules import read_rules_file
from bincount.models.module import CountModule
from tests.callbacks.harness import fake_trainer, fired, fit, make_rule, rule_warnings, tensorboard

MakeCfg = Callable[..., DictConfig]


def net_with_grads(first: float, second: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    for layer, value in zip(net, (first, second), strict=True):
        for p in layer.parameters():
            p.grad = torch.full_like(p, value)
    return net


def test_vanishing_gradient_needs_patience_checks_in_a_row(cfg: DictConfig,
                                                           tmp_path: Path) -> None:
    rule = make_rule(cfg, "vanishing_gradient", patience=3, every_n_steps=1,
                     rules_file=tmp_path / "r.json")
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters())
    for step, first in enumerate([0.0, 0.0, 1.0, 0.0, 0.0]):  # broken by a healthy step
        rule.on_before_optimizer_step(fake_trainer(global_step=step),
                                      net_with_grads(first, 1.0), optimizer)
    assert not rule.fired
    rule.on_before_optimizer_step(fake_trainer(global_step=5), net_with_grads(0.0, 1.0),
                                  optimizer)
    (entry,) = read_rules_file(tmp_path / "r.json")
    assert entry["step"] == 5
    assert entry["evidence"]["mean_abs_grad"] == {"0.weight": 0.0}  # only weights monitored
    assert entry["evidence"]["layers_below"] == 1 and entry["evidence"]["layers_monitored"] == 2


def test_vanishing_gradient_checks_every_n_steps_only(cfg: DictConfig, tmp_path: Path) -> None:
    rule = make_rule(cfg, "vanishing_gradient", patience=2, every_n_steps=10,
                     rules_file=tmp_path / "r.json")
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters())
    for step in range(10):  # one check (step 0), nine steps skipped
        rule.on_before_optimizer_step(fake_trainer(global_step=step), net_with_grads(0.0, 1.0),
                                      optimizer)
    assert not rule.fired
    rule.on_before_optimizer_step(fake_trainer(global_step=10), net_with_grads(0.0, 1.0),
                                  optimizer)
    (entry,) = read_rules_file(tmp_path / "r.json")
    assert entry["step"] == 10 and "at 2 checks in a row, every 10 steps" in entry["message"]


def test_exploding_tensor_fires_on_a_large_norm_and_drops_the_gradients(
    cfg: DictConfig, tmp_path: Path
) -> None:
    rule = make_rule(cfg, "exploding_tensor", max_grad_norm=10.0, rules_file=tmp_path / "r.json")
    net = net_with_grads(1.0, 1.0)  # norm sqrt(12) ~ 3.5: below
    optimizer = torch.optim.SGD(net.parameters())
    trainer = fake_trainer()
    rule.on_before_backward(trainer, net, torch.tensor(1.5))
    rule.on_before_optimizer_step(trainer, net, optimizer)
    assert not rule.fired
    net = net_with_grads(1.0, 100.0)
    optimizer = torch.optim.SGD(net.parameters())
    rule.on_before_optimizer_step(fake_trainer(global_step=3), net, optimizer)
    (entry,) = read_rules_file(tmp_path / "r.json")
    assert entry["message"].startswith("the gradient norm is 245 (> 10) at step 3; largest: 1.")
    assert trainer.should_stop is False and rule.stop_training  # configured to stop
    assert all(p.grad is None for p in net.parameters())  # nothing reaches the weights


def test_exploding_tensor_names_the_non_finite_layer(cfg: DictConfig, tmp_path: Path) -> None:
    rule = make_rule(cfg, "exploding_tensor", rules_file=tmp_path / "r.json")
    net = net_with_grads(1.0, float("inf"))
    trainer = fake_trainer()
    rule.on_before_backward(trainer, net, torch.tensor(2.0))
    rule.on_before_optimizer_step(trainer, net, torch.optim.SGD(net.parameters()))
    (entry,) = read_rules_file(tmp_path / "r.json")
    assert entry["message"] == ("non-finite gradients at step 0; the gradient of 1.weight is "
                                "non-finite (2 of 4 layers)")
    assert trainer.should_stop


def test_under_a_grad_scaler_only_a_non_finite_loss_counts(cfg: DictConfig) -> None:
    rule = make_rule(cfg, "exploding_tensor", rules_file=None)
    trainer = fake_trainer(precision_plugin=type("P", (), {"scaler": object()})())
    net = net_with_grads(1.0, float("nan"))  # the scaler skips such a step itself
    rule.on_before_backward(trainer, net, torch.tensor(2.0))
    rule.on_before_optimizer_step(trainer, net, torch.optim.SGD(net.parameters()))
    assert not rule.fired
    rule.on_before_backward(trainer, net, torch.tensor(float("nan")))
    rule.on_before_optimizer_step(trainer, net, torch.optim.SGD(net.parameters()))
    assert rule.fired


@pytest.mark.slow
def test_lr_100_diverges_and_the_exploding_rule_stops_the_run(
    make_cfg: MakeCfg, caplog: pytest.LogCaptureFixture, one_thread: None
) -> None:
    caplog.set_level(logging.INFO, logger="bincount.rules")
    cfg = make_cfg("model.optimizer.lr=100", "rules.exploding_tensor.max_grad_norm=1000")
    pl.seed_everything(cfg.seed)
    model: CountModule = instantiate(cfg.model)
    trainer = fit(cfg, model)

    entry = fired(cfg)["ExplodingTensor"]
    assert entry["stopped_training"] is True
    assert entry["step"] == 1  # the first step is sane; the lr=100 update blows up the next
    assert trainer.global_step == 2  # of the run's twelve
    assert entry["evidence"]["grad_norm"] > 1000
    (layer, norm), = entry["evidence"]["largest_layer"].items()
    assert layer.startswith("net.") and norm > 0
    assert "ExplodingTensor" in rule_warnings(caplog)
    assert any(r.levelno == logging.ERROR and "stops training at step 1" in r.getMessage()
               for r in caplog.records)
    events = tensorboard(cfg)
    # The rule logs the gradient norm every step.
    assert [e.step for e in events.Scalars("rules/ExplodingTensor/grad_norm")] == [0, 1]
    assert "rules/ExplodingTensor/text_summary" in events.Tags()["tensors"]
    # The gradients that tripped the rule never reached the weights.
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_a_nan_stops_the_run_before_it_reaches_the_weights(make_cfg: MakeCfg,
                                                           one_thread: None) -> None:
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
    assert "LossDivergence" not in fired(cfg)  # non-finite losses are ExplodingTensor's


@pytest.mark.slow
def test_a_zeroed_frozen_head_makes_the_gradients_vanish(make_cfg: MakeCfg,
                                                         one_thread: None) -> None:
    cfg = make_cfg("rules.vanishing_gradient.patience=3",
                   "rules.vanishing_gradient.every_n_steps=1", "++trainer.limit_train_batches=4",
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
