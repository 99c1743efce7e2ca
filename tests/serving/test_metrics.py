from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bincount.serving.capture import CaptureWriter
from bincount.serving.metrics import Metrics


def scrape(metrics: Metrics) -> dict[str, dict[tuple, float]]:
    """name -> {labels: value} of every sample, read with prometheus_client's own parser."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def result(count: int, confidence: float) -> dict:
    return {"count": count, "probabilities": {str(count): confidence, "9": 1 - confidence}}


def test_requests_batches_predictions_and_model_are_exposed(tmp_path: Path) -> None:
    metrics = Metrics("tiny/1", "onnx", [1, 2, 3])
    writer = CaptureWriter(tmp_path, sampling=1.0, max_queue=1)
    metrics.watch_capture(writer)
    metrics.observe_request("/invocations", 200, 0.02)
    metrics.observe_request("/invocations", 200, 0.3)
    metrics.observe_request("/invocations", 415, 0.001)
    metrics.observe_batch([result(2, 0.9), result(2, 0.55), result(3, 0.97)])
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
    assert s["bincount_capture_records_total"] == {
        (("outcome", "captured"),): 0, (("outcome", "dropped"),): 1,
        (("outcome", "failed"),): 0}
