"""Poor weight initialization: how differently the layers' outputs are scaled at the start."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.hooks import RemovableHandle

from bincount.callbacks.rules.base import Rule


class PoorWeightInitialization(Rule):
    """Over the first ``steps`` training steps, records the variance of each monitored layer's
    output; fires when the largest median variance is more than ``threshold`` times the
    smallest. Well-initialized (and normalized) networks keep their activations on a similar
    scale from layer to layer; a badly scaled layer makes every layer after it learn at the
    wrong rate (SageMaker's PoorWeightInitialization rule compares the same ratio).

    ``layers`` matches module names (configured: the ResNet stages ``net.layer1`` ...
    ``net.layer4``).
    """

    name = "PoorWeightInitialization"

    def __init__(self, *, threshold: float, steps: int, layers: str,
                 rules_file: str | Path | None, stop_training: bool) -> None:
        super().__init__(rules_file=rules_file, stop_training=stop_training)
        self.threshold, self.steps = threshold, steps
        self.pattern = re.compile(layers)
        self.variances: dict[str, list[float]] = {}
        self.handles: list[RemovableHandle] = []
        self.checked = False

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "checked": self.checked}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.checked = bool(state_dict.get("checked", False))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Only the start of training says anything about the initialization.
        if self.checked or trainer.global_step >= self.steps:
            self.checked = True
            return
        for name, module in pl_module.named_modules():
            if self.pattern.search(name):
                self.handles.append(module.register_forward_hook(self._recorder(name)))

    def _recorder(self, name: str) -> Any:
        def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            if module.training and isinstance(output, torch.Tensor):
                variance = output.detach().float().var().item()
                self.variances.setdefault(name, []).append(variance)

        return record

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.checked or trainer.global_step < self.steps:
            return
        self._remove_hooks()
        self.checked = True
        medians = {name: statistics.median(v) for name, v in self.variances.items() if v}
        if len(medians) < 2:
            return
        high = max(medians, key=medians.__getitem__)
        low = min(medians, key=medians.__getitem__)
        ratio = medians[high] / medians[low] if medians[low] > 0 else float("inf")
        self.log_scalars(trainer, {"activation_variance_ratio": ratio}, every_step=True)
        if self.decide(trainer, ratio > self.threshold):
            self.fire(
                trainer,
                f"activation variance differs {ratio:.3g}x across layers over the first "
                f"{self.steps} steps ({high}: {medians[high]:.3g}, {low}: {medians[low]:.3g}; "
                f"threshold {self.threshold:g}x)",
                {"ratio": ratio, "threshold": self.threshold, "steps": self.steps,
                 "median_variance": medians},
            )

    def _remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
