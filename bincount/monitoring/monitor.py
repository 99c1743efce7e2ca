"""``scripts/monitor.py``: read the capture, profile it as the baseline was profiled, compare,
write the report, print a summary; :class:`DriftDetected` (exit 3) when a threshold is crossed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from bincount.errors import BincountError, expect_int
from bincount.models.export import load_model
from bincount.monitoring.baseline import load_baseline
from bincount.monitoring.capture import read_capture
from bincount.monitoring.drift import Check, Thresholds, compare
from bincount.monitoring.report import write_report
from bincount.monitoring.stats import decode, profile_images
from bincount.serving.settings import expect_number, required

log = logging.getLogger(__name__)


class DriftDetected(BincountError):
    """A check crossed its threshold: exit 3, so a cron job or CI can alert on it."""

    exit_code = 3


@dataclass(frozen=True)
class MonitorSettings:
    model_dir: Path
    capture: str
    report_dir: Path
    max_requests: int | None
    min_requests: int
    threads: int
    thresholds: Thresholds

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> MonitorSettings:
        m, t = cfg.monitor, cfg.monitor.thresholds
        p = "monitor.thresholds."
        return cls(
            model_dir=Path(required("model_dir", cfg.model_dir, "an exported model directory")),
            capture=required("capture", cfg.capture, "a capture dir or s3://bucket/prefix"),
            report_dir=Path(required("monitor.report_dir", m.report_dir, "a directory")),
            max_requests=None if m.max_requests is None else expect_int(
                "monitor.max_requests", m.max_requests, 1),
            min_requests=expect_int("monitor.min_requests", m.min_requests, 2),
            threads=expect_int("monitor.threads", m.threads, 1),
            thresholds=Thresholds(
                count_psi=expect_number(p + "count_psi", t.count_psi, 0),
                confidence_ks=expect_number(p + "confidence_ks", t.confidence_ks, 0),
                image_ks=expect_number(p + "image_ks", t.image_ks, 0),
                p_value=expect_number(p + "p_value", t.p_value, 0),
                embedding_p_value=expect_number(p + "embedding_p_value", t.embedding_p_value, 0),
                permutations=expect_int(p + "permutations", t.permutations, 1),
                max_embeddings=expect_int(p + "max_embeddings", t.max_embeddings, 2),
            ),
        )


def monitor(cfg: DictConfig) -> list[Check]:
    """Run the drift report; returns the checks (raises DriftDetected on a violation)."""
    settings = MonitorSettings.from_cfg(cfg)
    baseline = load_baseline(settings.model_dir)
    records, bad = read_capture(settings.capture, settings.max_requests)
    if len(records) < settings.min_requests:
        raise BincountError(
            f"capture={settings.capture} holds {len(records)} captured requests "
            f"({bad} unreadable lines); monitor.min_requests={settings.min_requests} are needed "
            "for a drift report")
    torch.set_num_threads(settings.threads)
    net, spec = load_model(settings.model_dir)
    images, predictions, undecodable = [], [], 0
    for record in records:
        try:
            images.append(decode(record.image))
        except OSError:
            undecodable += 1
            continue
        predictions.append(record.prediction())
    current = profile_images(images, net, spec, predictions)
    checks = compare(baseline.profile, current, baseline.counts, settings.thresholds)
    header = {
        "model": str(settings.model_dir),
        "baseline": f"{len(baseline.profile)} images ({baseline.source})",
        "capture": f"{settings.capture}: {len(current)} requests compared"
                   + (f", {bad} unreadable lines" if bad else "")
                   + (f", {undecodable} undecodable images" if undecodable else ""),
        "first / last request": f"{records[0].time} / {records[-1].time}",
    }
    report = write_report(settings.report_dir, checks, baseline.profile, current,
                          baseline.counts, header)
    violations = [c for c in checks if c.violated]
    print(f"drift report of {len(current)} captured requests against {len(baseline.profile)} "
          f"baseline images: {report} (and .html)", flush=True)
    for check in checks:
        print(f"  {check.line()}", flush=True)
    if violations:
        raise DriftDetected(f"{len(violations)} drift violations: "
                            + ", ".join(c.name for c in violations) + f" (see {report})")
    print("no drift: every check is within its threshold", flush=True)
    return checks
