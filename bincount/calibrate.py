"""The step after fit: score the validation and test splits with the best model once, fit the
temperature and the reconciliation thresholds on validation, and measure both on test.

``train(cfg)`` stores the result in the exported ``model.json`` (``temperature``, ``reconcile``);
``evaluate(cfg)`` runs the same fit on the checkpoint's validation split (see
:mod:`bincount.evaluate`). The targets come from ``conf/reconcile/`` (one source) and are checked
here, in :class:`ReconcileSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from bincount.errors import BincountError
from bincount.files import atomic_path
from bincount.models.calibration import (
    calibrated,
    calibration_error,
    fit_temperature,
    reliability_figure,
)
from bincount.models.heads import head_loss
from bincount.models.metrics import CountMetrics
from bincount.models.reconcile import Thresholds, fit_thresholds, reconciliation_pairs, summarize

RELIABILITY_PNG = "reliability.png"
RISK_COVERAGE_PNG = "risk_coverage.png"


def _precision(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise BincountError(f"{key}: expected a precision between 0 and 1 (exclusive), "
                            f"got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ReconcileSettings:
    """``cfg.reconcile``: the precisions the match and mismatch verdicts are fitted for."""

    match_precision: float
    mismatch_precision: float

    @classmethod
    def from_cfg(cls, cfg: Any) -> ReconcileSettings:
        r = cfg.get("reconcile")
        if r is None:
            raise BincountError("reconcile: missing (expected the conf/reconcile group)")
        return cls(match_precision=_precision("reconcile.match_precision", r.match_precision),
                   mismatch_precision=_precision("reconcile.mismatch_precision",
                                                 r.mismatch_precision))


@dataclass
class Scores:
    """The class scores of one split (and of its mirrored images, for ``tta=hflip``)."""

    scores: torch.Tensor  # (N, K)
    labels: torch.Tensor  # (N,) class indices
    mirrored: torch.Tensor | None = None  # (N, K) scores of the horizontally flipped images
    first_images: torch.Tensor | None = None  # the first batch, normalized: the ONNX check

    def probs(self, temperature: float) -> torch.Tensor:
        """Calibrated probabilities; with mirrored scores, the mean of image and mirror."""
        probs = calibrated(self.scores, temperature)
        if self.mirrored is not None:
            probs = (probs + calibrated(self.mirrored, temperature)) / 2
        return probs


def score_split(net: nn.Module, datamodule: Any, split: str, device: torch.device, *,
                mirrored: bool = False) -> Scores:
    """One pass over ``split`` of a set-up datamodule, in eval mode, normalized as the model
    sees it at validation (the datamodule's ``on_after_batch_transfer`` outside training)."""
    loader = {"val": datamodule.val_dataloader, "test": datamodule.test_dataloader}[split]()
    was_training, home = net.training, next(net.parameters()).device
    net.eval().to(device)
    scores, flipped, labels, first = [], [], [], None
    try:
        with torch.inference_mode():
            for batch in loader:
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                         for k, v in batch.items()}
                batch = datamodule.on_after_batch_transfer(batch, 0)
                images = batch["image"].float()
                if len(images) == 0:  # every image of the batch was unreadable
                    continue
                if first is None:
                    first = images[:8].cpu()
                scores.append(net(images).float().cpu())
                if mirrored:
                    flipped.append(net(torch.flip(images, dims=[3])).float().cpu())
                labels.append(batch["label"].cpu())
    finally:
        net.train(was_training).to(home)
    if not scores:
        raise BincountError(f"the {split} split has no readable images to calibrate on")
    return Scores(torch.cat(scores), torch.cat(labels).long(),
                  torch.cat(flipped) if mirrored else None, first)


def split_metrics(scores: Scores, counts: list[int], head: str, split: str) -> dict[str, float]:
    """The counting metrics of one scored split, named as the module logs them
    (``<split>_loss``, ``<split>_acc``, ``<split>_acc_count<k>``, ...): the same numbers as a
    Lightning validate or test pass, without running the split through the net again."""
    metrics = CountMetrics(counts, split, sync_on_compute=False)  # the whole split is here
    metrics.update(scores.scores, scores.labels)
    values = {key: float(value) for key, value in metrics.compute().items()}
    values[f"{split}_loss"] = float(head_loss(head, scores.scores, scores.labels))
    return values


@dataclass(frozen=True)
class Calibration:
    temperature: float
    thresholds: Thresholds


def fit_calibration(val: Scores, counts: list[int], settings: ReconcileSettings) -> Calibration:
    """The temperature (on the plain scores: what every runtime divides by) and the thresholds
    (on the pairs of the calibrated probabilities this ``val`` gives, mirrored or not)."""
    temperature = fit_temperature(val.scores, val.labels)
    pairs = reconciliation_pairs(val.labels, counts)
    thresholds = fit_thresholds(pairs.p_expected(val.probs(temperature)), pairs.is_true,
                                match_precision=settings.match_precision,
                                mismatch_precision=settings.mismatch_precision)
    return Calibration(temperature, thresholds)


def calibration_metrics(splits: dict[str, Scores], calibration: Calibration,
                        counts: list[int]) -> dict[str, Any]:
    """metrics.json entries: ``<split>_ece`` (the raw softmax; with mirrored scores, their mean)
    and ``<split>_ece_calibrated`` per split, ``temperature``, the thresholds, and the
    reconciliation figures of the last split (test) as ``reconcile_*``."""
    metrics: dict[str, Any] = {"temperature": calibration.temperature}
    for split, s in splits.items():
        metrics[f"{split}_ece"] = calibration_error(s.probs(1.0), s.labels)
        metrics[f"{split}_ece_calibrated"] = calibration_error(
            s.probs(calibration.temperature), s.labels)
    t = calibration.thresholds
    metrics["reconcile_match_threshold"] = t.match_threshold
    metrics["reconcile_mismatch_threshold"] = t.mismatch_threshold
    metrics["reconcile_match_target"] = t.match_precision
    metrics["reconcile_mismatch_target"] = t.mismatch_precision
    split, s = list(splits.items())[-1]
    pairs = reconciliation_pairs(s.labels, counts)
    report = summarize(pairs.p_expected(s.probs(calibration.temperature)), pairs.is_true, t)
    metrics["reconcile_split"] = split
    metrics.update({f"reconcile_{k}": v for k, v in report.items()})
    return metrics


def reliability_plot(s: Scores, temperature: float, split: str) -> Figure:
    return reliability_figure(s.probs(1.0), s.probs(temperature), s.labels,
                              f"reliability, {split} split (T = {temperature:.2f})")


def save_figure(fig: Figure, path: Path) -> Path:
    """A PNG written atomically (a reader never sees half a file)."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return Path(path)
