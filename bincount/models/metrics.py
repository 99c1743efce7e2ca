"""Counting metrics from torchmetrics: accuracy, per-count accuracy, RMSE/MAE on counts,
within-one accuracy and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix


class CountMetrics(nn.Module):
    """Accumulates predictions of one split; ``compute()`` returns flat scalars named
    ``<prefix>_acc``, ``<prefix>_rmse``, ``<prefix>_mae``, ``<prefix>_within1_acc`` and
    ``<prefix>_acc_count<k>``."""

    def __init__(self, counts: Sequence[int], prefix: str, sync_on_compute: bool = True) -> None:
        """``sync_on_compute=False``: one process's predictions only (no collective under DDP)."""
        super().__init__()
        n = len(counts)
        self.prefix = prefix
        self.register_buffer("counts", torch.tensor(list(counts), dtype=torch.float32))
        sync = {"sync_on_compute": sync_on_compute}
        self.acc = MulticlassAccuracy(num_classes=n, average="micro", **sync)
        self.per_class = MulticlassAccuracy(num_classes=n, average="none", **sync)
        self.rmse = MeanSquaredError(squared=False, **sync)
        self.mae = MeanAbsoluteError(**sync)
        self.within1 = MeanMetric(**sync)
        self.confusion = MulticlassConfusionMatrix(num_classes=n, **sync)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        preds = logits.argmax(dim=1)
        pred_counts, true_counts = self.counts[preds], self.counts[labels]
        self.acc.update(preds, labels)
        self.per_class.update(preds, labels)
        self.rmse.update(pred_counts, true_counts)
        self.mae.update(pred_counts, true_counts)
        self.within1.update(((pred_counts - true_counts).abs() <= 1).float())
        self.confusion.update(preds, labels)

    def compute(self) -> dict[str, torch.Tensor]:
        p = self.prefix
        values = {
            f"{p}_acc": self.acc.compute(),
            f"{p}_rmse": self.rmse.compute(),
            f"{p}_mae": self.mae.compute(),
            f"{p}_within1_acc": self.within1.compute(),
        }
        for count, acc in zip(self.counts.tolist(), self.per_class.compute(), strict=True):
            values[f"{p}_acc_count{int(count)}"] = acc
        return values

    def reset(self) -> None:
        for metric in (self.acc, self.per_class, self.rmse, self.mae, self.within1, self.confusion):
            metric.reset()
