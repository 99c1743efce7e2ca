from __future__ import annotations

import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bincount.serving.capture import CaptureWriter
from bincount.serving.metrics import Metrics


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """name -> {labels: value} of every sample, read with prometheus_client's own parser."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def scrape(metrics: Metrics) -> dict[str, dict[tuple, float]]:
    return parse(metrics.render().decode())


def result(count: int, confidence: float) -> dict:
    return {"count": count, "probabilities": {str(count): confidence, "9": 1 - confidence}}


def test_requests_batches_predictions_and_model_are_exposed(tmp_path: Path) -> None:
    metrics = Metrics("tiny/1", "onnx", [1, 2, 3])
    writer = CaptureWriter(tmp_path, sampling=1.0, max_queue=1)
    metrics.watch_capture(writer)
    metrics.observe_request("/invocations", 200, 0.02)
    metrics.observe_request("/invocations", 200, 0.3)
    metrics.observe_request("/invocations", 415, 0.001)
    metrics.observe_batch([result(2, 0.9), {**result(2, 0.55), "verdict": "review"},
                           {**result(3, 0.97), "verdict": "match"}])
    writer.offer(b"x", "image/jpeg", b"{}", "application/json")
    writer.offer(b"x", "image/jpeg", b"{}", "application/json")  # the queue holds one
    s = scrape(metrics)
    route = ("route", "/invocations")
    assert s["bincount_requests_total"] == {(route, ("status", "200")): 2,
                                            (route, ("status", "415")): 1}
    assert s["bincount_request_duration_seconds_count"] == {(route,): 3}
    assert s["bincount_request_duration_seconds_bucket"][(("le", "0.025"), route)] == 2
    assert s["bincount_batch_size_count"][()] == 1 and s["bincount_batch_size_sum"][()] == 3
    assert s["bincount_predicted_count_total"] == {
        (("count", "1"),): 0, (("count", "2"),): 2, (("count", "3"),): 1}
    assert s["bincount_prediction_confidence_bucket"][(("le", "0.6"),)] == 1
    assert s["bincount_prediction_confidence_bucket"][(("le", "0.95"),)] == 2
    assert s["bincount_model_info"] == {(("model", "tiny/1"), ("runtime", "onnx")): 1}
    assert s["bincount_verdicts_total"] == {
        (("verdict", "match"),): 1, (("verdict", "mismatch"),): 0, (("verdict", "review"),): 1}
    assert s["bincount_capture_records_total"] == {
        (("outcome", "captured"),): 0, (("outcome", "dropped"),): 1,
        (("outcome", "failed"),): 0}


def test_the_endpoint_counts_its_requests_and_captures_them(
    model_dir: Path, jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    """The app on a thread with capture on: /metrics, scraped and parsed, counts what was
    answered; the capture holds the answered requests, as sent."""
    import requests

    from bincount.monitoring.capture import read_capture
    from tests.support.servers import serve_settings, served

    settings = serve_settings(f"model_dir={model_dir}", "serve.torch_threads=1",
                              "serve.capture.enabled=true", f"serve.capture.dir={tmp_path}")
    photos = list(jpegs.values())
    with served(settings) as url:
        answers = [requests.post(f"{url}/invocations", data=p,
                                 headers={"Content-Type": "image/jpeg"}, timeout=60).json()
                   for p in photos]
        assert requests.post(f"{url}/endpoints/x/invocations", data=b"no",
                             headers={"Content-Type": "text/plain"}, timeout=60).status_code == 415
        for _ in range(100):  # the writer thread captures off the request path
            s = parse(requests.get(f"{url}/metrics", timeout=10).text)
            if s["bincount_capture_records_total"][(("outcome", "captured"),)] == 4:
                break
            time.sleep(0.05)
    assert s["bincount_requests_total"][(("route", "/invocations"), ("status", "200"))] == 4
    assert s["bincount_requests_total"][
        (("route", "/endpoints/{endpoint_name}/invocations"), ("status", "415"))] == 1
    assert sum(s["bincount_predicted_count_total"].values()) == 4  # the warm-up is not counted
    assert s["bincount_batch_size_sum"][()] == 4
    predicted = {str(a["count"]) for a in answers}
    assert {k[0][1] for k, v in s["bincount_predicted_count_total"].items() if v} == predicted
    ((model, runtime),) = s["bincount_model_info"]
    assert model == ("model", "tiny/1") and runtime[1] in ("onnx", "torch")
    assert s["bincount_capture_records_total"][(("outcome", "captured"),)] == 4
    records, _ = read_capture(str(tmp_path))
    assert [r.image for r in records] == photos  # the 415 is not captured
    assert [r.output for r in records] == answers
