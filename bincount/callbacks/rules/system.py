"""Rules on how the hardware is used: a data-loader-bound loop and an idle GPU."""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from bincount.callbacks.rules.base import Rule
from bincount.callbacks.rules.timing import StepClock, StepTime, StepTimer

log = logging.getLogger("bincount.rules")


class _Timed(Rule, StepTimer):
    """A rule that sees every training step's timing, with a window of the last ``window``."""

    def __init__(self, *, window: int, rules_file: str | Path | None,
                 stop_training: bool) -> None:
        super().__init__(rules_file=rules_file, stop_training=stop_training)
        self.window = window
        self.clock = StepClock()
        self.steps: deque[StepTime] = deque(maxlen=window)

    def on_step(self, trainer: pl.Trainer, step: StepTime) -> None:
        self.steps.append(step)
        self.after_step(trainer, step)

    def after_step(self, trainer: pl.Trainer, step: StepTime) -> None:
        raise NotImplementedError


class DataLoaderBound(_Timed):
    """Fires when, over the last ``window`` steps, more than ``threshold`` of the training
    loop's time went to waiting for data (loading, decoding, augmenting, copying to the device)
    rather than computing. More ``data.num_workers``, ``data.cache=true`` or a larger batch
    are the usual remedies. Measured on any device."""

    name = "DataLoaderBound"

    def __init__(self, *, threshold: float, window: int, rules_file: str | Path | None,
                 stop_training: bool) -> None:
        super().__init__(window=window, rules_file=rules_file, stop_training=stop_training)
        self.threshold = threshold

    def after_step(self, trainer: pl.Trainer, step: StepTime) -> None:
        wait = sum(s.wait for s in self.steps)
        total = wait + sum(s.compute for s in self.steps)
        fraction = wait / total if total > 0 else 0.0
        self.log_scalars(trainer, {"data_wait_fraction": fraction})
        if self.fired or len(self.steps) < self.window:
            return
        if self.decide(trainer, fraction > self.threshold):
            n = len(self.steps)
            self.fire(
                trainer,
                f"{fraction:.0%} of the last {n} steps' time was spent waiting for data "
                f"(threshold {self.threshold:.0%}): {wait / n * 1000:.1f} ms waiting vs "
                f"{(total - wait) / n * 1000:.1f} ms computing per step",
                {"data_wait_fraction": fraction, "threshold": self.threshold, "window_steps": n,
                 "mean_wait_ms": wait / n * 1000, "mean_compute_ms": (total - wait) / n * 1000,
                 "num_workers": _num_workers(trainer)},
            )


def _num_workers(trainer: pl.Trainer) -> int | None:
    loader = trainer.train_dataloader
    return getattr(loader, "num_workers", None)


def gpu_utilization(device: torch.device) -> float | None:
    """Percent of the last sample period the GPU was busy (NVML); None when unknown."""
    try:
        return float(torch.cuda.utilization(device))
    except Exception:  # no NVML (pynvml / nvidia-ml-py missing), or not an NVIDIA device
        return None


class LowGPUUtilization(_Timed):
    """Samples GPU utilization after every step; fires when, over ``window`` steps, its 95th
    percentile stays below ``threshold_p95`` percent: the GPU idles, usually waiting for data
    (the data-wait fraction is in the evidence) or doing too little per step (small batch or
    model). Inactive without a CUDA GPU or without NVML."""

    name = "LowGPUUtilization"

    def __init__(self, *, threshold_p95: float, window: int, rules_file: str | Path | None,
                 stop_training: bool) -> None:
        super().__init__(window=window, rules_file=rules_file, stop_training=stop_training)
        self.threshold_p95 = threshold_p95
        self.samples: deque[float] = deque(maxlen=window)
        self.active = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        self.active = device.type == "cuda" and gpu_utilization(device) is not None
        if not self.active:
            log.info("rule %s is inactive: training runs on %s%s", self.name, device,
                     " without NVML" if device.type == "cuda" else "")

    def after_step(self, trainer: pl.Trainer, step: StepTime) -> None:
        if not self.active:
            return
        value = gpu_utilization(trainer.lightning_module.device)
        if value is None:
            return
        self.samples.append(value)
        self.log_scalars(trainer, {"gpu_utilization_percent": value})
        if self.fired or len(self.samples) < self.window:
            return
        p5, p50, p95 = (float(v) for v in np.percentile(self.samples, [5, 50, 95]))
        if self.decide(trainer, p95 < self.threshold_p95):
            wait = sum(s.wait for s in self.steps)
            total = wait + sum(s.compute for s in self.steps)
            n = len(self.samples)
            self.fire(
                trainer,
                f"GPU utilization p95 is {p95:.0f}% over the last {n} steps "
                f"(threshold {self.threshold_p95:.0f}%); "
                f"{wait / total if total else 0:.0%} of the step time was data wait",
                {"p5": p5, "p50": p50, "p95": p95, "threshold_p95": self.threshold_p95,
                 "window_steps": n, "data_wait_fraction": wait / total if total else 0.0},
            )
