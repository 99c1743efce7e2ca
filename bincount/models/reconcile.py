"""Reconciliation: a count checked against the quantity the inventory system expects.

The model's calibrated probability that the bin holds exactly the expected quantity,
``p_expected``, gives the verdict: ``match`` at or above ``match_threshold``, ``mismatch`` at or
below ``mismatch_threshold``, ``review`` (a person looks) in between. The thresholds are chosen on
the validation split for target precisions and stored in ``model.json`` under ``"reconcile"``; a
threshold that is None (its target could not be reached) means that verdict is never given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

VERDICTS = ("match", "mismatch", "review")


@dataclass(frozen=True)
class Thresholds:
    """What ``model.json``'s ``"reconcile"`` record holds."""

    match_threshold: float | None  # p_expected >= this: match (None: never)
    mismatch_threshold: float | None  # p_expected <= this: mismatch (None: never)
    match_precision: float  # the targets they were chosen for on the validation split
    mismatch_precision: float

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Thresholds | None:
        """None for a model exported before reconciliation (no verdicts then)."""
        if not record:
            return None
        return cls(**{key: record[key] for key in cls.__dataclass_fields__})

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    def verdict(self, p_expected: float) -> str:
        if self.match_threshold is not None and p_expected >= self.match_threshold:
            return "match"
        if self.mismatch_threshold is not None and p_expected <= self.mismatch_threshold:
            return "mismatch"
        return "review"


def reconcile(
    probabilities: Sequence[float], counts: Sequence[int], expected: int,
    thresholds: Thresholds | None,
) -> dict[str, Any]:
    """The fields an answer gains for an expected count: ``expected``, ``p_expected`` and
    ``verdict`` (``review`` when the model has no thresholds). ``expected`` must be one of
    ``counts`` (the caller refuses other values, naming its field)."""
    p_expected = float(probabilities[list(counts).index(expected)])
    return {
        "expected": int(expected),
        "p_expected": round(p_expected, 6),
        "verdict": thresholds.verdict(p_expected) if thresholds else "review",
    }


# The wrong expected counts of the evaluation pairs are drawn from this seed: the same pairs on
# every run, so thresholds fitted on validation and figures reported on test are repeatable.
PAIR_SEED = 0
WRONG_OFFSETS = (-2, -1, 1, 2)


@dataclass(frozen=True)
class Pairs:
    """(image, expected count) pairs: each image once with its true count, once with a wrong one.

    ``image`` indexes the images, ``expected`` is a class index (into the model's counts) and
    ``is_true`` says whether it is the image's true class.
    """

    image: torch.Tensor
    expected: torch.Tensor
    is_true: torch.Tensor

    def p_expected(self, probs: torch.Tensor) -> torch.Tensor:
        """The probability each pair's image holds exactly its expected count."""
        return probs[self.image, self.expected]


def reconciliation_pairs(labels: torch.Tensor, counts: Sequence[int]) -> Pairs:
    """Pair every image (``labels``: class indices into ``counts``) with its true count, and
    with a wrong expected count its true count +-1 or +-2, drawn with PAIR_SEED among the
    offsets that stay inside ``counts`` (an image with none gets only its true pair)."""
    counts = [int(c) for c in counts]
    index = {c: i for i, c in enumerate(counts)}
    rng = np.random.default_rng(PAIR_SEED)
    image, expected, is_true = [], [], []
    for i, label in enumerate(labels.tolist()):
        image.append(i)
        expected.append(label)
        is_true.append(True)
        wrong = [index[counts[label] + d] for d in WRONG_OFFSETS if counts[label] + d in index]
        pick = int(rng.integers(len(WRONG_OFFSETS)))  # one draw per image, used or not
        if wrong:
            image.append(i)
            expected.append(wrong[pick % len(wrong)])
            is_true.append(False)
    return Pairs(torch.tensor(image, dtype=torch.long), torch.tensor(expected, dtype=torch.long),
                 torch.tensor(is_true, dtype=torch.bool))


# Thresholds are fitted on a few hundred validation pairs: a verdict's precision must reach its
# target with 95% confidence (one-sided Wilson lower bound), not just as a point estimate, or new
# bins fall short of it (on the demo, point estimates fitted for 0.95 gave 0.92-0.94 on test).
CONFIDENCE_Z = 1.6449


def wilson_lower(hits: torch.Tensor, n: torch.Tensor, z: float = CONFIDENCE_Z) -> torch.Tensor:
    """One-sided lower confidence bound of a proportion ``hits / n`` (Wilson score interval)."""
    share = hits / n
    centre = share + z * z / (2 * n)
    spread = z * torch.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def _loosest(p: torch.Tensor, good: torch.Tensor, target: float, descending: bool) -> float | None:
    """The threshold that gives a verdict to the most pairs (those at or beyond it, walking
    ``p`` from the most certain end) while the share of ``good`` among them is at least
    ``target`` with 95% confidence (:func:`wilson_lower`)."""
    if len(p) == 0:
        return None
    order = torch.sort(p.double(), descending=descending, stable=True).indices
    values, hits = p.double()[order], good[order].double()
    precision = wilson_lower(hits.cumsum(0), torch.arange(1, len(p) + 1, dtype=torch.float64))
    # A threshold takes in every tie of its value: only the last of a run of ties counts.
    last_of_tie = torch.ones(len(p), dtype=torch.bool)
    last_of_tie[:-1] = values[1:] != values[:-1]
    ok = torch.nonzero((precision >= target) & last_of_tie).flatten()
    return float(values[ok[-1]]) if len(ok) else None


def fit_thresholds(
    p_expected: torch.Tensor, is_true: torch.Tensor, *, match_precision: float,
    mismatch_precision: float,
) -> Thresholds:
    """The loosest thresholds whose verdicts reach the target precisions on these pairs (with
    95% confidence: :data:`CONFIDENCE_Z`).

    ``match``: the smallest threshold such that, of the pairs at or above it, at least
    ``match_precision`` are true. ``mismatch``: the largest threshold below the match threshold
    such that, of the pairs at or below it, at least ``mismatch_precision`` are false. Either is
    None where no threshold reaches its target (that verdict is then never given).
    """
    p = p_expected.detach().double().cpu().flatten()
    true = is_true.detach().bool().cpu().flatten()
    match = _loosest(p, true, match_precision, descending=True)
    below = p < match if match is not None else torch.ones_like(true)
    mismatch = _loosest(p[below], ~true[below], mismatch_precision, descending=False)
    return Thresholds(match_threshold=match, mismatch_threshold=mismatch,
                      match_precision=float(match_precision),
                      mismatch_precision=float(mismatch_precision))


def summarize(p_expected: torch.Tensor, is_true: torch.Tensor,
              thresholds: Thresholds) -> dict[str, Any]:
    """What the verdicts do on these pairs: the share settled automatically (match or mismatch),
    the error rate among the settled, the share left for review, each verdict's share and
    precision (None when it was never given), and the verdicts that are never given."""
    verdicts = [thresholds.verdict(float(p)) for p in p_expected.tolist()]
    truth = is_true.bool().tolist()
    n = max(1, len(verdicts))
    out: dict[str, Any] = {"pairs": len(verdicts)}
    right_total = settled_total = 0
    for name, right_when in (("match", True), ("mismatch", False)):
        given = [t for v, t in zip(verdicts, truth, strict=True) if v == name]
        right = sum(t == right_when for t in given)
        out[f"{name}_share"] = len(given) / n
        out[f"{name}_precision"] = right / len(given) if given else None
        right_total += right
        settled_total += len(given)
    out["settled"] = settled_total / n
    out["settled_error"] = 1 - right_total / settled_total if settled_total else None
    out["review"] = 1 - settled_total / n
    out["never_given"] = [name for name in ("match", "mismatch")
                          if getattr(thresholds, f"{name}_threshold") is None]
    return out
