"""What the callback tests share: a fake trainer state for unit tests of one rule, a tiny
in-process fit for the tests that need Lightning's loop, and readers of what a rule leaves
(rules.json, its warning, TensorBoard)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bincount.models.module import CountModule
from bincount.train import instantiate_group


def fake_trainer(**state: Any) -> SimpleNamespace:
    """The trainer attributes a rule reads, on one process (override any with ``state``)."""
    trainer = SimpleNamespace(
        global_step=0, current_epoch=0, is_global_zero=True, world_size=1,
        sanity_checking=False, log_every_n_steps=1, loggers=[], should_stop=False,
        callback_metrics={}, state=SimpleNamespace(fn="fit"),
        precision_plugin=SimpleNamespace(), train_dataloader=None,
    )
    for key, value in state.items():
        setattr(trainer, key, value)
    return trainer


def make_rule(cfg: DictConfig, key: str, **overrides: Any) -> Any:
    """The rule ``rules.<key>`` as configured (the YAML is the one source of its settings)."""
    return instantiate(cfg.rules[key], **overrides)


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


def loss_output(value: float) -> dict[str, torch.Tensor]:
    """What ``on_train_batch_end`` gets from a training step that returned this loss."""
    return {"loss": torch.tensor(value)}
