"""Drift both ways, through the capture layout the server writes: traffic from the training
renderer (another seed) gives no violation; real ABID photos against the synthetic model give
violations, named in the report and in the exit (DriftDetected: exit 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bincount.errors import BincountError
from bincount.monitoring.monitor import DriftDetected, monitor
from tests.support.monitoring import captured
from tests.support.paths import CONF

pytestmark = pytest.mark.slow  # profiles a baseline and two captures (~15 s)


def run(model_dir: Path, capture: Path, report: Path, *extra: str) -> list:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("monitor", overrides=[
            f"model_dir={model_dir}", f"capture={capture}", f"monitor.report_dir={report}",
            "monitor.thresholds.permutations=200", *extra])
    return monitor(cfg)


def test_traffic_from_the_training_renderer_is_not_drift(
    baseline_model: Path, same_renderer: list[bytes], tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    capture = captured(baseline_model, same_renderer, tmp_path / "capture")
    checks = run(baseline_model, capture, tmp_path / "report")
    assert [c.name for c in checks if c.violated] == []
    assert "no drift" in capsys.readouterr().out
    text = (tmp_path / "report" / "monitor_report.md").read_text()
    assert "## Violations (0)" in text and "40 requests compared" in text
    assert (tmp_path / "report" / "monitor_plots.png").stat().st_size > 10_000
    assert "<table>" in (tmp_path / "report" / "monitor_report.html").read_text()


def test_real_photos_against_the_synthetic_model_are_drift(
    baseline_model: Path, abid_photos: list[bytes], tmp_path: Path
) -> None:
    capture = captured(baseline_model, abid_photos, tmp_path / "capture")
    with pytest.raises(DriftDetected) as raised:
        run(baseline_model, capture, tmp_path / "report")
    assert raised.value.exit_code == 3
    text = (tmp_path / "report" / "monitor_report.md").read_text()
    violations = text.split("## Violations")[1].split("## Checks")[0]
    for name in ("image width", "image height", "embeddings (penultimate layer)"):
        assert f"**{name}**" in violations and name in str(raised.value)


def test_too_small_a_capture_is_refused_with_the_key(
    baseline_model: Path, same_renderer: list[bytes], tmp_path: Path
) -> None:
    capture = captured(baseline_model, same_renderer[:3], tmp_path / "capture")
    with pytest.raises(BincountError, match="holds 3 captured requests.*min_requests=20"):
        run(baseline_model, capture, tmp_path / "report")
