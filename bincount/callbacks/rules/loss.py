"""Rules on the loss curves: not decreasing (steps), overfit and overtraining (epochs)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from bincount.callbacks.rules.base import Rule


def loss_of(outputs: Any) -> float | None:
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else None


def _metric(trainer: pl.Trainer, *names: str) -> float | None:
    for name in names:
        value = trainer.callback_metrics.get(name)
        if value is not None:
            return float(value)
    return None


class LossNotDecreasing(Rule):
    """Averages the training loss over windows of ``window`` steps; fires when ``patience``
    windows in a row have not improved on the best window so far by ``min_decrease_percent``
    (a non-finite mean never improves). Typical causes: a learning rate far too high (the loss
    jumps and stays up) or too low, a broken label path, a frozen network."""

    name = "LossNotDecreasing"

    def __init__(self, *, window: int, min_decrease_percent: float, patience: int,
                 rules_file: str | Path | None, stop_training: bool) -> None:
        super().__init__(rules_file=rules_file, stop_training=stop_training)
        self.window, self.min_decrease, self.patience = window, min_decrease_percent, patience
        self.current: list[float] = []
        self.means: list[float] = []  # one per finished window
        self.best: tuple[int, float] | None = None  # (window index, mean)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "means": self.means, "best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.means = list(state_dict.get("means", []))
        best = state_dict.get("best")
        self.best = (int(best[0]), float(best[1])) if best else None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = loss_of(outputs)
        if loss is None:
            return
        self.current.append(loss)
        if len(self.current) < self.window:
            return
        mean = sum(self.current) / len(self.current)  # NaN/Inf propagate: no improvement
        self.current = []
        self.means.append(mean)
        index = len(self.means) - 1
        if self.best is None or (math.isfinite(mean) and (
                not math.isfinite(self.best[1])
                or mean < self.best[1] - abs(self.best[1]) * self.min_decrease / 100)):
            self.best = (index, mean)
        since = index - self.best[0]
        self.log_scalars(trainer, {"window_mean_loss": mean, "windows_without_decrease": since},
                         every_step=True)
        if self.fired:
            return
        if self.decide(trainer, since >= self.patience):
            best_step = (self.best[0] + 1) * self.window - 1
            recent = self.means[-self.patience:]
            self.fire(
                trainer,
                f"the mean training loss has not fallen {self.min_decrease:g}% below its best "
                f"({self.best[1]:.4g}, window ending at step {best_step}) for {since} windows "
                f"of {self.window} steps (since: {', '.join(f'{m:.4g}' for m in recent)})",
                {"window_steps": self.window, "min_decrease_percent": self.min_decrease,
                 "patience_windows": self.patience, "best_window_mean": self.best[1],
                 "best_window_last_step": best_step, "window_means_since": recent},
            )


class _EpochRule(Rule):
    """Collects one (train loss, validation value) pair per epoch that ran validation."""

    def __init__(self, *, rules_file: str | Path | None, stop_training: bool) -> None:
        super().__init__(rules_file=rules_file, stop_training=stop_training)
        self.history: list[dict[str, float]] = []
        self.val: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.history = [dict(h) for h in state_dict.get("history", [])]

    def read_val(self, trainer: pl.Trainer) -> float | None:
        raise NotImplementedError

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.val = self.read_val(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train = _metric(trainer, "train_loss_epoch", "train_loss")
        if self.val is None or train is None:
            return
        self.history.append({"epoch": trainer.current_epoch, "train": train, "val": self.val})
        self.val = None
        self.check(trainer)

    def check(self, trainer: pl.Trainer) -> None:
        raise NotImplementedError


class Overfit(_EpochRule):
    """Fires when the validation loss has risen (by more than ``min_delta``) above its best for
    ``patience`` epochs while the training loss kept falling: the model is memorizing the
    training set. Needs ``val_loss`` and ``train_loss`` (logged per epoch)."""

    name = "Overfit"
    stop_is_failure = False  # stopping here is early stopping: the best checkpoint stands

    def __init__(self, *, patience: int, min_delta: float, rules_file: str | Path | None,
                 stop_training: bool) -> None:
        super().__init__(rules_file=rules_file, stop_training=stop_training)
        self.patience, self.min_delta = patience, min_delta

    def read_val(self, trainer: pl.Trainer) -> float | None:
        return _metric(trainer, "val_loss")

    def check(self, trainer: pl.Trainer) -> None:
        now = self.history[-1]
        best_i = min(range(len(self.history)), key=lambda i: self.history[i]["val"])
        best = self.history[best_i]
        self.log_scalars(trainer, {"val_minus_train_loss": now["val"] - now["train"]},
                         every_step=True)
        since = len(self.history) - 1 - best_i
        if self.fired:
            return
        triggered = (since >= self.patience and now["val"] > best["val"] + self.min_delta
                     and now["train"] < best["train"])
        if self.decide(trainer, triggered):
            self.fire(
                trainer,
                f"val_loss rose from {best['val']:.4g} (epoch {best['epoch']}) to "
                f"{now['val']:.4g} over {since} epochs while train_loss fell from "
                f"{best['train']:.4g} to {now['train']:.4g}",
                {"patience_epochs": self.patience, "best_epoch": best["epoch"],
                 "best_val_loss": best["val"], "val_loss": now["val"],
                 "train_loss_at_best": best["train"], "train_loss": now["train"],
                 "history": self.history[best_i:]},
            )


class Overtraining(_EpochRule):
    """Fires when ``monitor`` (``mode`` min or max) has not improved by more than ``min_delta``
    for ``patience`` epochs: further epochs cost time without helping. With ``stop_training``
    it is early stopping."""

    name = "Overtraining"
    stop_is_failure = False  # stopping here is early stopping: the best checkpoint stands

    def __init__(self, *, monitor: str, mode: str, patience: int, min_delta: float,
                 rules_file: str | Path | None, stop_training: bool) -> None:
        super().__init__(rules_file=rules_file, stop_training=stop_training)
        if mode not in ("min", "max"):
            raise ValueError(f"rules.overtraining.mode: expected 'min' or 'max', got {mode!r}")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta

    def read_val(self, trainer: pl.Trainer) -> float | None:
        return _metric(trainer, self.monitor)

    def check(self, trainer: pl.Trainer) -> None:
        sign = 1.0 if self.mode == "min" else -1.0
        best_i = 0
        for i, h in enumerate(self.history):
            if sign * (self.history[best_i]["val"] - h["val"]) > self.min_delta:
                best_i = i
        since = len(self.history) - 1 - best_i
        self.log_scalars(trainer, {"epochs_without_improvement": since}, every_step=True)
        best = self.history[best_i]
        if self.fired:
            return
        if self.decide(trainer, since >= self.patience):
            self.fire(
                trainer,
                f"{self.monitor} has not improved on {best['val']:.4g} (epoch {best['epoch']}) "
                f"for {since} epochs",
                {"monitor": self.monitor, "mode": self.mode, "patience_epochs": self.patience,
                 "best_epoch": best["epoch"], "best": best["val"],
                 "latest": self.history[-1]["val"],
                 "values": [h["val"] for h in self.history[best_i:]]},
            )
