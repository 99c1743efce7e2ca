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
