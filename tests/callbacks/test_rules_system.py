"""DataLoaderBound and LowGPUUtilization (bincount/callbacks/rules/system.py) on fed step
times and utilization samples, PoorWeightInitialization (activations.py) on a small net, and
real tiny fits (slow) for the loader and the initialization."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

import bincount.callbacks.rules.system as system
from bincount.callbacks.rules import read_rules_file
from bincount.callbacks.rules.timing import StepTime
from bincount.models.module import CountModule
from tests.callbacks.harness import fake_trainer, fired, fit, make_rule

MakeCfg = Callable[..., DictConfig]


def steps(*pairs: tuple[float, float]) -> list[StepTime]:
    return [StepTime(0, i, wait, compute, 8) for i, (wait, compute) in enumerate(pairs)]


# DataLoaderBound


def test_data_loader_bound_judges_a_full_window(cfg: DictConfig, tmp_path: Path) -> None:
    rule = make_rule(cfg, "data_loader_bound", threshold=0.5, window=3,
                     rules_file=tmp_path / "rules.json")
    trainer = fake_trainer()
    for step in steps((0.3, 0.1), (0.3, 0.1)):  # 75% waiting, but only 2 of 3 steps seen
        rule.on_step(trainer, step)
    assert not rule.fired
    rule.on_step(trainer, StepTime(0, 2, 0.0, 0.2, 8))  # 0.6 s of 1.0 s: 60%
    (entry,) = read_rules_file(tmp_path / "rules.json")
    evidence = entry["evidence"]
    assert evidence["data_wait_fraction"] == pytest.approx(0.6)
    assert (evidence["mean_wait_ms"], evidence["mean_compute_ms"]) == (200, pytest.approx(133.333))
    assert entry["message"].startswith("60% of the last 3 steps' time was spent waiting")


def test_a_compute_bound_loop_is_not_data_bound(cfg: DictConfig) -> None:
    rule = make_rule(cfg, "data_loader_bound", threshold=0.5, window=3, rules_file=None)
    for step in steps((0.1, 0.3), (0.2, 0.2), (0.1, 0.3), (0.3, 0.2)):  # 33%, then 46%
        rule.on_step(fake_trainer(), step)
    assert not rule.fired


# LowGPUUtilization


@pytest.fixture
def utilization(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The NVML readings the rule will get, one per step."""
    readings: list[float] = []
    monkeypatch.setattr(system, "gpu_utilization", lambda device: readings.pop(0))
    yield readings


def gpu_run(rule: Any, samples: list[float], readings: list[float]) -> None:
    readings.extend(samples)
    rule.active = True  # as on_train_start finds it on a CUDA device with NVML
    trainer = fake_trainer(lightning_module=SimpleNamespace(device=torch.device("cuda", 0)))
    for step in steps(*[(0.01, 0.1)] * len(samples)):
        trainer.global_step = step.step
        rule.on_step(trainer, step)


@pytest.mark.parametrize(("samples", "fires"), [
    ([10, 20, 30, 40, 50, 60, 60, 60, 60, 65], True),  # p95 62.75 (numpy's linear)
    ([10, 20, 30, 40, 50, 60, 60, 60, 60, 95], False),  # one busy sample: p95 79.25
    ([75] * 10, False),
])
def test_low_gpu_utilization_judges_the_p95_of_the_window(
    cfg: DictConfig, utilization: list[float], samples: list[float], fires: bool,
    tmp_path: Path
) -> None:
    rule = make_rule(cfg, "low_gpu_utilization", threshold_p95=70.0, window=10,
                     rules_file=tmp_path / "rules.json")
    gpu_run(rule, samples, utilization)
    assert rule.fired is fires
    if fires:
        (entry,) = read_rules_file(tmp_path / "rules.json")
        evidence = entry["evidence"]
        assert entry["step"] == 9  # judged once the window was full
        assert (evidence["p5"], evidence["p50"], evidence["p95"]) == (14.5, 55, 62.75)
        assert evidence["window_steps"] == 10
        assert evidence["data_wait_fraction"] == pytest.approx(0.01 / 0.11)


def test_gpu_rule_is_inactive_on_cpu(cfg: DictConfig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bincount.rules")
    rule = make_rule(cfg, "low_gpu_utilization", window=1, rules_file=None)
    rule.on_train_start(fake_trainer(), SimpleNamespace(device=torch.device("cpu")))
    assert not rule.active
    assert "LowGPUUtilization is inactive: training runs on cpu" in caplog.text
    rule.on_step(fake_trainer(), steps((0.0, 0.1))[0])  # an inactive rule reads no GPU
    assert not rule.fired


# PoorWeightInitialization


class Stages(nn.Module):
    """Three 'stages' whose outputs have variance 1, 1 and ``scale``²."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.layer1, self.layer2, self.layer3 = nn.Identity(), nn.Identity(), nn.Identity()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(x)) * self.scale)


def init_run(rule: Any, net: nn.Module, n_steps: int) -> None:
    trainer = fake_trainer()
    rule.on_train_start(trainer, net)
    generator = torch.Generator().manual_seed(0)
    for step in range(n_steps):
        net(torch.randn(256, generator=generator))
        trainer.global_step = step + 1
        rule.on_train_batch_end(trainer, net, None, None, step)


def test_poor_weight_initialization_compares_the_stages(cfg: DictConfig, tmp_path: Path) -> None:
    rule = make_rule(cfg, "poor_weight_initialization", threshold=10.0, steps=2,
                     layers=r"^layer\d$", rules_file=tmp_path / "rules.json")
    net = Stages(scale=10.0)  # variance 100x
    init_run(rule, net, 3)
    (entry,) = read_rules_file(tmp_path / "rules.json")
    assert entry["step"] == 2
    variances = entry["evidence"]["median_variance"]
    assert set(variances) == {"layer1", "layer2", "layer3"}
    assert max(variances, key=variances.get) == "layer3"
    assert entry["evidence"]["ratio"] == pytest.approx(100, rel=1e-4)
    assert not net.layer1._forward_hooks  # the hooks are gone after the first steps


def test_well_scaled_stages_are_not_poor_initialization(cfg: DictConfig) -> None:
    rule = make_rule(cfg, "poor_weight_initialization", threshold=10.0, steps=2,
                     layers=r"^layer\d$", rules_file=None)
    init_run(rule, Stages(scale=3.0), 3)  # 9x: below 10x
    assert not rule.fired and rule.checked


@pytest.mark.slow
def test_a_badly_scaled_layer_is_poor_weight_initialization(make_cfg: MakeCfg,
                                                            one_thread: None) -> None:
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


@pytest.mark.slow
def test_a_slow_data_loader_is_data_bound(make_cfg: MakeCfg, one_thread: None) -> None:
    """The step clock measures Lightning's real loop: the wait is the loader's."""
    cfg = make_cfg("rules.data_loader_bound.window=3", "++trainer.limit_train_batches=4",
                   "++trainer.limit_val_batches=1", "trainer.max_epochs=1", "data.batch_size=4")
    datamodule = instantiate(cfg.data)
    real = datamodule.train_dataloader
    datamodule.train_dataloader = lambda: SlowLoader(real(), factor=3.0)
    fit(cfg, datamodule=datamodule)

    entry = fired(cfg)["DataLoaderBound"]
    assert entry["evidence"]["data_wait_fraction"] > 0.5  # the loader's sleeps, 3x the rest
    assert entry["evidence"]["window_steps"] == 3 and entry["step"] == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gpu_rule_reads_nvml_in_a_real_fit(make_cfg: MakeCfg) -> None:
    """On a real GPU the rule is active and its evidence is real NVML readings."""
    cfg = make_cfg("trainer=gpu", "trainer.precision=32-true",
                   "rules.low_gpu_utilization.window=3", "++trainer.limit_train_batches=4",
                   "trainer.max_epochs=1")
    trainer = fit(cfg)
    rule = next(c for c in trainer.callbacks if isinstance(c, system.LowGPUUtilization))
    assert rule.active and len(rule.samples) == 3
