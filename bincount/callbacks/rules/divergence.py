"""A diverging run: the training loss far above where it started, while still finite."""

from __future__ import annotations

import math
import statistics
from collections import deque
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from bincount.callbacks.rules.base import Rule
from bincount.callbacks.rules.loss import loss_of


def chance_loss(pl_module: pl.LightningModule) -> float | None:
    """ln(K), the cross-entropy of a uniform guess over the module's K counts (None when the
    module has no ``counts``)."""
    counts = getattr(pl_module, "counts", None)
    return math.log(len(counts)) if counts is not None and len(counts) > 1 else None


class LossDivergence(Rule):
    """Fires when the median training loss of the last ``window`` steps is more than
    ``factor`` times its reference: the larger of the first step's loss (before any update)
    and the chance loss ln(K) of a uniform guess over the K counts.

    A classifier that learns never gets there; one whose learning rate is far too high does
    within a few steps (its loss jumps by orders of magnitude and stays finite, so neither a
    NaN/Inf check such as SageMaker Debugger's ExplodingTensor nor LossNotDecreasing, which
    needs windows of steps to compare, says so in time). The median over the window ignores a
    single noisy batch. Non-finite losses are left to ExplodingTensor.
    """

    name = "LossDivergence"

    def __init__(self, *, factor: float, window: int, rules_file: str | Path | None,
                 stop_training: bool) -> None:
        super().__init__(rules_file=rules_file, stop_training=stop_training)
        self.factor, self.window = factor, window
        self.losses: deque[float] = deque(maxlen=window)
        self.start: float | None = None  # the first step's loss
        self.chance: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "start": self.start}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.start = state_dict.get("start")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.chance = chance_loss(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = loss_of(outputs)
        if loss is None or not math.isfinite(loss):
            return
        if self.start is None:
            self.start = loss
        self.losses.append(loss)
        reference = max(self.start, self.chance or 0.0)
        if len(self.losses) < self.window or reference <= 0:
            return
        median = statistics.median(self.losses)
        ratio = median / reference
        self.log_scalars(trainer, {"loss_ratio": ratio})
        if self.fired:
            return
        if self.decide(trainer, ratio > self.factor):
            chance = f"ln({len(pl_module.counts)}) = {self.chance:.4g}" if self.chance else "n/a"
            self.fire(
                trainer,
                f"the training loss is diverging: its median over the last {len(self.losses)} "
                f"steps is {median:.4g}, {ratio:.3g}x its reference {reference:.4g} (first "
                f"step {self.start:.4g}, chance {chance}; threshold {self.factor:g}x): "
                "is the learning rate too high?",
                {"median_loss": median, "ratio": ratio, "factor": self.factor,
                 "window_steps": len(self.losses), "first_step_loss": self.start,
                 "chance_loss": self.chance, "reference": reference,
                 "recent_losses": list(self.losses)},
            )
