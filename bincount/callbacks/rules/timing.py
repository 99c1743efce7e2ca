"""Where a training step's wall time goes: waiting for the batch, or computing on it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl


@dataclass
class StepTime:
    epoch: int
    step: int  # the trainer's global step when the batch started
    wait: float  # s from the end of the previous step (or the epoch start) to this batch
    compute: float  # s from the batch's start to its end: forward, backward, optimizer
    images: int


class StepClock:
    """Feed it the loop's hooks; it yields one StepTime per training batch.

    The wait covers fetching the batch from the DataLoader (its workers, or the main process
    with ``num_workers=0``) and the copy to the device: what Lightning does between one
    ``on_train_batch_end`` and the next ``on_train_batch_start``. Validation inside an epoch
    is left out of it.
    """

    def __init__(self) -> None:
        self.mark: float | None = None
        self.started: float | None = None
        self.step = 0

    def epoch_start(self) -> None:
        self.mark = time.perf_counter()

    def pause(self) -> None:
        """Before work that is not training (validation): the next wait starts after it."""
        self.mark = None

    def resume(self) -> None:
        self.mark = time.perf_counter()

    def batch_start(self, step: int) -> None:
        self.started, self.step = time.perf_counter(), step

    def batch_end(self, epoch: int, images: int) -> StepTime | None:
        now = time.perf_counter()
        if self.started is None:
            return None
        wait = self.started - self.mark if self.mark is not None else 0.0
        result = StepTime(epoch, self.step, max(0.0, wait), now - self.started, images)
        self.mark, self.started = now, None
        return result


class StepTimer(pl.Callback):
    """Drives ``self.clock`` (a StepClock the subclass creates) from the training loop's hooks
    and hands every timed step to ``on_step``."""

    clock: StepClock

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.epoch_start()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.pause()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.resume()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self.clock.batch_start(trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.clock.batch_end(trainer.current_epoch, batch_size_of(batch))
        if step is not None:
            self.on_step(trainer, step)

    def on_step(self, trainer: pl.Trainer, step: StepTime) -> None:
        raise NotImplementedError


def batch_size_of(batch: object) -> int:
    """Images in a batch: the project's dict batches, or the first tensor's length."""
    if isinstance(batch, dict):
        labels = batch.get("label", batch.get("image"))
        return len(labels) if labels is not None else 0
    if isinstance(batch, list | tuple) and batch:
        return len(batch[0])
    return 0
