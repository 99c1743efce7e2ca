"""The README's monitoring walk-through, each step its own process: ``scripts/serve.py`` with
capture on, photos sent with ``scripts/predict.py``, ``/metrics`` scraped and parsed with the
Prometheus client's parser, ``scripts/monitor.py`` on the capture (exit 0: no drift), and on a
capture of real ABID photos against the synthetic model (exit 3, violations named)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.monitoring import baseline_model_dir, captured, synthetic_photos
from tests.support.paths import SCRIPTS
from tests.support.servers import running_server

pytestmark = pytest.mark.slow


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True,
                          text=True, timeout=300)


def test_serve_capture_scrape_and_monitor(tmp_path: Path, sample_dir: Path) -> None:
    model_dir = baseline_model_dir(tmp_path / "train")
    photos = synthetic_photos(tmp_path / "traffic")
    capture = tmp_path / "capture"
    with running_server(model_dir, tmp_path / "logs", [
        "serve.torch_threads=1", "serve.capture.enabled=true", f"serve.capture.dir={capture}",
    ]) as server:
        sent = script("predict.py", f"images=[{photos}]", f"predict.url={server.url}",
                      f"paths.log_dir={tmp_path / 'logs'}")
        assert sent.returncode == 0, sent.stderr[-3000:]
        metrics = requests.get(f"{server.url}/metrics", timeout=10)
        assert metrics.headers["content-type"].startswith("text/plain")
        assert server.stop() == 0  # SIGTERM: capture drained, then a clean exit
    assert "data capture on: 100% of requests" in server.log()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(metrics.text) for s in f.samples}
    answered = {dict(labels)["route"]: v for (name, labels), v in samples.items()
                if name == "bincount_requests_total" and dict(labels)["status"] == "200"}
    # predict.py calls the local endpoint as boto3's sagemaker-runtime client does
    assert answered["/endpoints/{endpoint_name}/invocations"] == 40
    assert sum(v for (name, _), v in samples.items()
               if name == "bincount_predicted_count_total") == 40
    assert len(list(capture.rglob("*.jsonl"))) >= 1

    fine = script("monitor.py", f"model_dir={model_dir}", f"capture={capture}",
                  f"monitor.report_dir={tmp_path / 'report'}", f"paths.log_dir={tmp_path}")
    assert fine.returncode == 0, fine.stdout + fine.stderr[-3000:]
    assert "40 captured requests" in fine.stdout and "no drift" in fine.stdout
    assert (tmp_path / "report" / "monitor_report.html").is_file()

    real = [p.read_bytes() for p in sorted((sample_dir / "images").glob("*.jpg"))[:60]]
    drifted = script("monitor.py", f"model_dir={model_dir}",
                     f"capture={captured(model_dir, real, tmp_path / 'abid')}",
                     f"monitor.report_dir={tmp_path / 'abid-report'}", f"paths.log_dir={tmp_path}")
    assert drifted.returncode == 3, drifted.stdout + drifted.stderr[-3000:]
    assert "drift violations: " in drifted.stderr and "image width" in drifted.stderr
    assert "VIOLATION" in drifted.stdout
