"""Reconciliation thresholds fitted for target precisions, and the evaluation pairs."""

from __future__ import annotations

import pytest
import torch

from bincount.models.reconcile import (
    fit_thresholds,
    reconciliation_pairs,
    summarize,
    wilson_lower,
)

COUNTS = [1, 2, 3, 4, 5]


def test_every_image_gets_its_true_count_and_one_wrong_count_inside_the_model_counts() -> None:
    labels = torch.tensor([0, 1, 2, 3, 4] * 40)
    pairs = reconciliation_pairs(labels, COUNTS)
    again = reconciliation_pairs(labels, COUNTS)
    assert torch.equal(pairs.expected, again.expected)  # the same pairs every time
    assert len(pairs.image) == 2 * len(labels)
    assert pairs.is_true.sum() == len(labels)
    true_count = torch.tensor(COUNTS)[labels[pairs.image]]
    expected = torch.tensor(COUNTS)[pairs.expected]
    gap = (expected - true_count)[~pairs.is_true].abs()
    assert set(gap.tolist()) == {1, 2}
    assert ((expected >= 1) & (expected <= 5)).all()
    # one count only: no wrong count to pair with
    assert len(reconciliation_pairs(torch.tensor([0, 0]), [3]).image) == 2


def test_thresholds_reach_the_target_precision_and_settle_the_sure_pairs() -> None:
    g = torch.Generator().manual_seed(1)
    is_true = torch.rand(2000, generator=g) < 0.5
    # true pairs mostly high, false pairs mostly low, with overlap in the middle
    p = torch.where(is_true, torch.rand(2000, generator=g) ** 0.2,
                    torch.rand(2000, generator=g) ** 5)
    thresholds = fit_thresholds(p, is_true, match_precision=0.95, mismatch_precision=0.9)
    assert thresholds.mismatch_threshold < thresholds.match_threshold
    report = summarize(p, is_true, thresholds)
    assert report["match_precision"] >= 0.95 and report["mismatch_precision"] >= 0.9
    assert report["settled"] > 0.5 and report["never_given"] == []
    assert report["settled"] + report["review"] == pytest.approx(1.0)
    # the loosest that reaches the target with 95% confidence: one step further would not
    settled = p >= thresholds.match_threshold
    n = torch.tensor(float(settled.sum()))
    assert wilson_lower(is_true[settled].sum().double(), n) >= 0.95
    step = p >= float(p[~settled].max())
    assert wilson_lower(is_true[step].sum().double(), step.sum().double()) < 0.95


def test_a_few_perfect_pairs_are_not_enough_evidence_for_a_verdict() -> None:
    # 10 sure and right pairs: 100% precision, but a bound of 0.79 at 95% confidence
    p = torch.tensor([0.99] * 10 + [0.5] * 10, dtype=torch.float64)
    is_true = torch.tensor([True] * 10 + [False, True] * 5)
    assert fit_thresholds(p, is_true, match_precision=0.95,
                          mismatch_precision=0.95).match_threshold is None
    many = fit_thresholds(p.repeat(20), is_true.repeat(20), match_precision=0.95,
                          mismatch_precision=0.95)
    assert many.match_threshold == 0.99  # 200 such pairs are


def test_an_unreachable_target_means_that_verdict_is_never_given() -> None:
    # the model cannot tell true from false pairs: p says nothing
    p = torch.full((100,), 0.5)
    is_true = torch.arange(100) % 2 == 0
    thresholds = fit_thresholds(p, is_true, match_precision=0.95, mismatch_precision=0.95)
    assert thresholds.match_threshold is None and thresholds.mismatch_threshold is None
    report = summarize(p, is_true, thresholds)
    assert report["never_given"] == ["match", "mismatch"] and report["review"] == 1.0
    assert report["match_precision"] is None and report["settled_error"] is None
