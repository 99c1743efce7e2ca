"""Compare captured traffic with the training baseline: one :class:`Check` per statistic.

- Predicted counts: the population stability index (PSI, the industry's shift score for a
  categorical distribution; > 0.2 is the usual "significant shift"), with a chi-square test of the
  two histograms reported beside it.
- Confidence and each image statistic: the two-sample Kolmogorov-Smirnov test (scipy): its
  statistic (the largest gap between the two CDFs, 0-1) is the effect size, its p-value the
  evidence; a check fails when both cross their thresholds.
- Embeddings: the maximum mean discrepancy (MMD^2, RBF kernel, median-distance bandwidth) with a
  permutation test, 40 lines of numpy here. alibi-detect and torchdrift implement the same test
  but pull in TensorFlow or pin old torch releases: too heavy for one statistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from bincount.monitoring.stats import IMAGE_STATS, Profile

EPS = 1e-4  # the PSI's floor for an empty bin (a count never predicted on one side)


@dataclass(frozen=True)
class Thresholds:
    """From ``conf/monitor.yaml``'s ``thresholds`` (checked in :mod:`...monitoring.monitor`)."""

    count_psi: float
    confidence_ks: float
    image_ks: float
    p_value: float
    embedding_p_value: float
    permutations: int
    max_embeddings: int


@dataclass(frozen=True)
class Check:
    name: str  # e.g. "count distribution", "image brightness"
    method: str  # e.g. "PSI", "KS", "MMD^2"
    value: float  # the effect size compared with ``threshold``
    threshold: float
    p_value: float | None
    violated: bool
    detail: str  # baseline vs current, in a few words

    def line(self) -> str:
        p = "" if self.p_value is None else f", p={self.p_value:.3g}"
        flag = "VIOLATION" if self.violated else "ok"
        return (f"{flag:9} {self.name}: {self.method}={self.value:.3g} "
                f"(threshold {self.threshold:g}{p}); {self.detail}")


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins."""
    e = np.maximum(expected / max(1, expected.sum()), EPS)
    a = np.maximum(actual / max(1, actual.sum()), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def histogram(values: list[int], bins: list[int]) -> np.ndarray:
    return np.array([values.count(b) for b in bins], dtype=np.float64)


def count_check(base: Profile, current: Profile, bins: list[int], t: Thresholds) -> Check:
    expected, actual = histogram(base.counts, bins), histogram(current.counts, bins)
    table = np.stack([expected, actual])
    table = table[:, table.sum(axis=0) > 0]
    p = float(stats.chi2_contingency(table).pvalue) if table.shape[1] > 1 else 1.0
    value = psi(expected, actual)
    shares = lambda h: "/".join(f"{v / max(1, h.sum()):.2f}" for v in h)  # noqa: E731
    return Check("count distribution", "PSI", value, t.count_psi, p, value > t.count_psi,
                 f"share of counts {bins}: baseline {shares(expected)}, "
                 f"current {shares(actual)} (chi-square p={p:.3g})")


def ks_check(name: str, base: list[float], current: list[float], threshold: float,
             alpha: float) -> Check:
    result = stats.ks_2samp(np.asarray(base), np.asarray(current))
    value, p = float(result.statistic), float(result.pvalue)
    return Check(name, "KS", value, threshold, p, value > threshold and p < alpha,
                 f"median baseline {np.median(base):.4g}, current {np.median(current):.4g}")


def mmd2(kernel: np.ndarray, n: int) -> float:
    """The (biased) MMD^2 of the first ``n`` rows against the rest, from the pooled kernel."""
    xx, yy, xy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return float(xx.mean() + yy.mean() - 2 * xy.mean())


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int,
             seed: int = 0) -> tuple[float, float]:
    """(MMD^2, permutation p-value) of two samples of embeddings."""
    pooled = np.concatenate([x, y]).astype(np.float64)
    squared = np.maximum(
        (pooled**2).sum(1)[:, None] + (pooled**2).sum(1)[None, :] - 2 * pooled @ pooled.T, 0)
    positive = squared[np.triu_indices(len(pooled), 1)]
    bandwidth = float(np.median(positive[positive > 0])) if np.any(positive > 0) else 1.0
    kernel = np.exp(-squared / bandwidth)
    n = len(x)
    observed = mmd2(kernel, n)
    rng = np.random.default_rng(seed)
    higher = 0
    for _ in range(permutations):
        order = rng.permutation(len(pooled))
        higher += mmd2(kernel[np.ix_(order, order)], n) >= observed
    return observed, (higher + 1) / (permutations + 1)


def embedding_check(base: Profile, current: Profile, t: Thresholds) -> Check:
    rng = np.random.default_rng(0)
    y = current.embeddings
    if len(y) > t.max_embeddings:
        y = y[np.sort(rng.choice(len(y), t.max_embeddings, replace=False))]
    value, p = mmd_test(base.embeddings, y, t.permutations)
    return Check("embeddings (penultimate layer)", "MMD^2", value, t.embedding_p_value, p,
                 p < t.embedding_p_value,
                 f"{len(base.embeddings)} baseline vs {len(y)} current, permutation test over "
                 f"{t.permutations} shuffles; the threshold is on p")


def compare(base: Profile, current: Profile, bins: list[int], t: Thresholds) -> list[Check]:
    """Every check of the report, in report order."""
    checks = [
        count_check(base, current, bins, t),
        ks_check("confidence", base.confidences, current.confidences, t.confidence_ks,
                 t.p_value),
    ]
    for key in IMAGE_STATS:
        checks.append(ks_check(f"image {key}", base.images[key], current.images[key],
                               t.image_ks, t.p_value))
    checks.append(embedding_check(base, current, t))
    return checks
