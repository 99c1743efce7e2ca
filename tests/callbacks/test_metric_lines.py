"""The ``name=<float>`` lines (bincount/callbacks/metric_lines.py) that SageMaker's metric
definitions parse: the configured names, per epoch, and the best val_loss last."""

from __future__ import annotations

import re

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from tests.callbacks.harness import fake_trainer


def test_the_configured_metrics_are_printed_each_epoch_and_the_best_at_the_end(
    cfg: DictConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    callback = instantiate(cfg.callbacks.metric_lines)
    assert callback.names == ["train_loss", "val_loss", "val_acc"]  # conf/callbacks/default
    checkpoint = ModelCheckpoint(monitor="val_loss")
    checkpoint.best_model_score = torch.tensor(0.4321)
    trainer = fake_trainer(current_epoch=3, checkpoint_callback=checkpoint, callback_metrics={
        "train_loss_epoch": torch.tensor(0.5), "train_loss_step": torch.tensor(9.0),
        "val_loss": torch.tensor(0.75), "val_rmse": torch.tensor(1.0),
    })  # no val_acc this epoch: no line for it
    callback.on_train_epoch_end(trainer, None)
    callback.on_fit_end(trainer, None)
    assert capsys.readouterr().out.splitlines() == [
        "epoch=3 train_loss=0.500000", "epoch=3 val_loss=0.750000", "best val_loss=0.432100"]


def test_only_rank_zero_prints_and_not_in_the_sanity_check(
    cfg: DictConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    callback = instantiate(cfg.callbacks.metric_lines, names=["val_loss"])
    metrics = {"val_loss": torch.tensor(1.0)}
    callback.on_train_epoch_end(fake_trainer(is_global_zero=False, callback_metrics=metrics),
                                None)
    callback.on_train_epoch_end(fake_trainer(sanity_checking=True, callback_metrics=metrics),
                                None)
    callback.on_train_epoch_end(fake_trainer(callback_metrics=metrics), None)
    out = capsys.readouterr().out
    assert re.findall(r"val_loss=\S+", out) == ["val_loss=1.000000"]
