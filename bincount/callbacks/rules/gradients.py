"""Gradient rules, checked after backward and before the optimizer step (gradients unscaled
under mixed precision)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from bincount.callbacks.rules.base import Rule


def monitored(pl_module: pl.LightningModule, pattern: re.Pattern[str]) -> list[
        tuple[str, torch.nn.Parameter]]:
    """Trainable parameters whose name matches; their gradients are what the rule reads."""
    return [(name, p) for name, p in pl_module.named_parameters()
            if p.requires_grad and pattern.search(name)]


class VanishingGradient(Rule):
    """Fires when a monitored layer's mean absolute gradient stays below ``threshold`` for
    ``patience`` consecutive checks, one every ``every_n_steps`` steps: that layer has stopped
    learning (a dead or zeroed path, saturated activations, a frozen head in front of it)."""

    name = "VanishingGradient"

    def __init__(self, *, threshold: float, patience: int, layers: str, every_n_steps: int,
                 rules_file: str | Path | None, stop_training: bool) -> None:
        super().__init__(rules_file=rules_file, stop_training=stop_training)
        self.threshold, self.patience, self.every_n_steps = threshold, patience, every_n_steps
        self.pattern = re.compile(layers)
        self.below: dict[str, int] = {}  # layer -> consecutive checks below the threshold

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if trainer.global_step % self.every_n_steps != 0:
            return
        params = [(n, p) for n, p in monitored(pl_module, self.pattern) if p.grad is not None]
        if not params:
            return
        # One device->host copy for all layers.
        means = torch.stack([p.grad.detach().abs().float().mean() for _, p in params]).tolist()
        low = []
        for (name, _), mean in zip(params, means, strict=True):
            self.below[name] = self.below.get(name, 0) + 1 if mean < self.threshold else 0
            if self.below[name] >= self.patience:
                low.append((name, mean))
        self.log_scalars(trainer, {"min_mean_abs_grad": min(means)})
        if self.fired:  # the scalar goes on; the warning was given
            return
        if self.decide(trainer, bool(low)):
            first = low[0][0] if low else "on another process"
            self.fire(
                trainer,
                f"{len(low)} of {len(params)} monitored layers have had a mean |gradient| below "
                f"{self.threshold:g} at {self.patience} checks in a row, every "
                f"{self.every_n_steps} steps (first: {first})",
                {"threshold": self.threshold, "patience_checks": self.patience,
                 "every_n_steps": self.every_n_steps,
                 "layers_below": len(low), "layers_monitored": len(params),
                 "mean_abs_grad": dict(low[:10])},
            )


class ExplodingTensor(Rule):
    """Fires on a non-finite loss or gradient, or a gradient norm above ``max_grad_norm``.

    With ``stop_training`` (as configured) the offending gradients are dropped before the
    optimizer step, so the weights, and the checkpoints saved as the run ends, stay finite.
    Under a mixed-precision GradScaler, non-finite gradients are the scaler's business (it
    skips those steps and lowers its scale); only a non-finite loss counts there.
    """

    name = "ExplodingTensor"

    def __init__(self, *, max_grad_norm: float | None, layers: str,
                 rules_file: str | Path | None, stop_training: bool) -> None:
        super().__init__(rules_file=rules_file, stop_training=stop_training)
        self.max_grad_norm = max_grad_norm
        self.pattern = re.compile(layers)
        self.loss: float | None = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: torch.Tensor) -> None:
        self.loss = float(loss.detach())

    def _scaler_active(self, trainer: pl.Trainer) -> bool:
        return getattr(trainer.precision_plugin, "scaler", None) is not None

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        params = [(n, p) for n, p in monitored(pl_module, self.pattern) if p.grad is not None]
        grads = [p.grad.detach() for _, p in params]
        # Every step, so the total norm in one fused pass (about half the time of a norm per
        # layer on the CPU); the per-layer norms only when they are reported.
        total = float(torch.nn.utils.get_total_norm(
            grads, foreach=grads[0].device.type in ("cpu", "cuda"))) if grads else 0.0
        self.log_scalars(trainer, {"grad_norm": total})
        if self.fired:
            return
        over = self.max_grad_norm is not None and total > self.max_grad_norm
        # Per layer only for what is reported: the non-finite layers, or the largest one.
        norms = (torch.stack([g.float().norm() for g in grads]).tolist()
                 if not math.isfinite(total) or over else [])
        evidence: dict[str, Any] = {"loss": self.loss, "grad_norm": total}
        step = trainer.global_step
        # Under a GradScaler, non-finite gradients are expected now and then (skipped steps).
        bad = [] if self._scaler_active(trainer) or not norms else [
            (name, value) for (name, _), value in zip(params, norms, strict=True)
            if not math.isfinite(value)
        ]
        if bad:
            evidence["non_finite_layers"] = dict(bad[:10])
        where = (f"; the gradient of {bad[0][0]} is non-finite ({len(bad)} of {len(params)} "
                 "layers)" if bad else "")
        message = None
        if self.loss is not None and not math.isfinite(self.loss):
            message = f"the loss is {self.loss} at step {step}{where}"
        elif bad:
            message = f"non-finite gradients at step {step}{where}"
        elif over:
            (name, _), value = max(zip(params, norms, strict=True), key=lambda item: item[1])
            evidence["largest_layer"] = {name: value}
            message = (f"the gradient norm is {total:.4g} (> {self.max_grad_norm:g}) at step "
                       f"{step}; largest: {name} ({value:.4g})")
        if self.decide(trainer, message is not None):
            self.fire(trainer, message or "a non-finite loss or gradient on another process",
                      evidence)
            if self.stop_training:
                optimizer.zero_grad(set_to_none=True)  # nothing non-finite reaches the weights
