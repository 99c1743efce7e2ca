"""Calibrated confidence: temperature scaling, expected calibration error, risk-coverage, plots.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) divides
the class scores by one scalar ``T > 0`` chosen to minimize the negative log-likelihood of the
validation labels; ``softmax(scores / T)`` is then the calibrated distribution. It never changes
the predicted count (the argmax), only how sure the model says it is. Every network here outputs
class scores whose softmax is the class distribution (the ordinal head's are log-probabilities),
so the same ``T`` serves both heads.

The expected calibration error is torchmetrics' (top-label, 15 equal-width bins, L1): the
share-weighted gap between confidence and accuracy over the bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state
from torchmetrics.functional.classification import multiclass_calibration_error

ECE_BINS = 15
# The search interval of T: wide enough for any trained net (an untrained one may want the
# edge, which is then returned); log T is searched, so both ends are equally far from 1.
T_MIN, T_MAX = 0.05, 20.0
COVERAGES = (1.0, 0.8, 0.6, 0.4, 0.2)


def _check(scores: torch.Tensor, labels: torch.Tensor) -> None:
    if scores.ndim != 2 or labels.ndim != 1 or len(scores) != len(labels) or len(labels) == 0:
        raise ValueError(f"expected scores (N, K) and labels (N,) with N > 0, got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")


def nll(scores: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(scores / temperature)``."""
    return float(F.cross_entropy(scores.double() / temperature, labels.long()))


def fit_temperature(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The ``T`` in [T_MIN, T_MAX] minimizing the NLL of ``softmax(scores / T)`` on ``labels``.

    The NLL is convex in ``1/T`` (a log-sum-exp of linear functions minus a linear one), hence
    unimodal in ``log T``: a golden-section search over ``log T`` finds its minimum without a
    learning rate or a starting point, and gives the same answer on every machine (float64).
    """
    _check(scores, labels)
    scores, labels = scores.detach().double().cpu(), labels.detach().long().cpu()
    ratio = (math.sqrt(5) - 1) / 2
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(scores, labels, math.exp(a)), nll(scores, labels, math.exp(b))
    while hi - lo > 1e-6:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(scores, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(scores, labels, math.exp(b))
    return math.exp((lo + hi) / 2)


def calibrated(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """The calibrated class distribution ``softmax(scores / temperature)``."""
    return torch.softmax(scores.float() / temperature, dim=1)


def calibration_error(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Expected calibration error of class distributions ``probs`` (N, K): torchmetrics'
    top-label ECE over ECE_BINS equal-width confidence bins, L1."""
    _check(probs, labels)
    return float(multiclass_calibration_error(
        probs.float().cpu(), labels.long().cpu(), num_classes=probs.shape[1], n_bins=ECE_BINS,
        norm="l1"))


def reliability(probs: torch.Tensor, labels: torch.Tensor) -> list[tuple[float, float, int]]:
    """Per non-empty confidence bin (the ECE's bins): (mean confidence, accuracy, images)."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    bins = torch.clamp((confidence * ECE_BINS).ceil().long() - 1, 0, ECE_BINS - 1)
    rows = []
    for b in range(ECE_BINS):
        inside = bins == b
        if inside.any():
            rows.append((float(confidence[inside].mean()), float(correct[inside].mean()),
                         int(inside.sum())))
    return rows


def reliability_figure(
    before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor, title: str
) -> Figure:
    """Accuracy against confidence per bin, before and after temperature scaling, with the
    diagonal a calibrated model lies on; the legend carries each ECE."""
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="calibrated")
    for name, probs, style in (("before", before, "o--"), ("after", after, "s-")):
        rows = reliability(probs, labels)
        ax.plot([r[0] for r in rows], [r[1] for r in rows], style,
                label=f"{name} (ECE {calibration_error(probs, labels):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (largest probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def risk_coverage(
    probs: torch.Tensor, labels: torch.Tensor, coverages: Sequence[float] = COVERAGES
) -> dict[float, float]:
    """Accuracy when the model answers only its most confident images: for each coverage c,
    the accuracy over the ceil(c * N) images of highest confidence (ties in image order)."""
    _check(probs, labels)
    confidence, predicted = probs.max(dim=1)
    order = torch.sort(confidence, descending=True, stable=True).indices
    correct = (predicted == labels)[order].float()
    out = {}
    for c in coverages:
        n = max(1, math.ceil(c * len(labels)))
        out[c] = float(correct[:n].mean())
    return out


def risk_coverage_figure(probs: torch.Tensor, labels: torch.Tensor, title: str) -> Figure:
    """Accuracy against coverage, every image from the most confident down."""
    confidence, predicted = probs.max(dim=1)
    order = torch.sort(confidence, descending=True, stable=True).indices
    correct = (predicted == labels)[order].float()
    n = torch.arange(1, len(correct) + 1)
    fig = Figure(figsize=(4.5, 3.6))
    ax = fig.subplots()
    ax.plot((n / len(n)).numpy(), (correct.cumsum(0) / n).numpy())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("accuracy on the answered images")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
