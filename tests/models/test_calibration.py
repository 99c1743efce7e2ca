"""Temperature scaling and the calibration error, on synthetic scores whose true temperature is
known: labels drawn from softmax(scores / 2.5)."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from bincount.models.calibration import (
    calibrated,
    calibration_error,
    fit_temperature,
    reliability_figure,
    risk_coverage,
)

TRUE_T = 2.5


@pytest.fixture(scope="module")
def tempered() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4000, 5, generator=g) * 3
    labels = torch.multinomial(torch.softmax(scores / TRUE_T, 1), 1, generator=g).squeeze(1)
    return scores, labels


def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_with(tempered) -> None:
    scores, labels = tempered
    assert fit_temperature(scores, labels) == pytest.approx(TRUE_T, rel=0.05)
    assert fit_temperature(scores, labels) == fit_temperature(scores, labels)  # deterministic


def test_calibration_lowers_the_error_and_keeps_every_prediction(tempered) -> None:
    scores, labels = tempered
    before = torch.softmax(scores, 1)
    after = calibrated(scores, fit_temperature(scores, labels))
    assert calibration_error(before, labels) > 0.15 > 0.03 > calibration_error(after, labels)
    assert torch.equal(before.argmax(1), after.argmax(1))
    # the figure is torchmetrics' top-label, 15-bin, L1 ECE
    reference = MulticlassCalibrationError(num_classes=5, n_bins=15, norm="l1")
    assert calibration_error(after, labels) == pytest.approx(float(reference(after, labels)))


def test_risk_coverage_answers_the_confident_images_first_and_the_plot_has_both_curves(
    tempered,
) -> None:
    scores, labels = tempered
    probs = calibrated(scores, TRUE_T)
    accuracy = risk_coverage(probs, labels)
    assert list(accuracy) == [1.0, 0.8, 0.6, 0.4, 0.2]
    assert accuracy[1.0] == pytest.approx(float((probs.argmax(1) == labels).float().mean()))
    assert accuracy[0.2] > accuracy[0.6] > accuracy[1.0]
    legend = reliability_figure(torch.softmax(scores, 1), probs, labels, "t").axes[0].get_legend()
    assert [t.get_text().split(" (")[0] for t in legend.get_texts()] == [
        "calibrated", "before", "after"]


def test_scores_without_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="expected scores"):
        fit_temperature(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
