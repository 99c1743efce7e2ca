"""Prometheus metrics of the local endpoint (``GET /metrics``, the text exposition format).

Requests by route and status, request latency, micro-batch sizes, the predicted-count
distribution, the confidence (largest probability) histogram, reconciliation verdicts, the model
and runtime, and what data capture did. Each app has its own registry; updating a metric is a
few dict lookups and additions, done after the answer is computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from bincount.models.reconcile import VERDICTS
from bincount.serving.capture import CaptureWriter

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class CaptureCollector(Collector):
    """``bincount_capture_records_total{outcome=captured|dropped|failed}`` read from the writer
    when scraped (the writer's thread keeps plain counters)."""

    def __init__(self, writer: CaptureWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("bincount_capture_records", "Data capture records by "
                                     "outcome (dropped: queue full; failed: write error)",
                                     labels=["outcome"])
        for outcome in ("captured", "dropped", "failed"):
            family.add_metric([outcome], getattr(self.writer, outcome))
        yield family


class Metrics:
    """The endpoint's metrics in a registry of their own."""

    def __init__(self, model: str, runtime: str, counts: Sequence[int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("bincount_requests", "Requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("bincount_request_duration_seconds",
                                 "Time from request to answer", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("bincount_batch_size", "Images per forward pass",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.predicted = Counter("bincount_predicted_count", "Answers by predicted count",
                                 ["count"], registry=r)
        self.confidence = Histogram("bincount_prediction_confidence",
                                    "The predicted count's probability",
                                    buckets=CONFIDENCE_BUCKETS, registry=r)
        self.verdicts = Counter("bincount_verdicts", "Answers to requests with an expected count, "
                                "by verdict", ["verdict"], registry=r)
        for verdict in VERDICTS:  # every verdict shows, even at 0
            self.verdicts.labels(verdict=verdict).inc(0)
        Info("bincount_model", "The model served and the runtime that runs it",
             registry=r).info({"model": model, "runtime": runtime})
        self._count_children = {c: self.predicted.labels(count=str(c)) for c in counts}
        for child in self._count_children.values():  # every count shows, even at 0
            child.inc(0)

    def watch_capture(self, writer: CaptureWriter) -> None:
        self.registry.register(CaptureCollector(writer))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_batch(self, results: Sequence[dict[str, Any]]) -> None:
        """One forward pass's results (as :func:`handlers.predict_fn` returns them)."""
        self.batch_size.observe(len(results))
        for result in results:
            count = result["count"]
            child = self._count_children.get(count) or self.predicted.labels(count=str(count))
            child.inc()
            self.confidence.observe(max(result["probabilities"].values()))
            if "verdict" in result:
                self.verdicts.labels(verdict=result["verdict"]).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_of(scope: dict[str, Any]) -> str:
    """The route template a request matched (``/endpoints/{endpoint_name}/invocations``), so
    endpoint names and stray paths do not each make a label; ``other`` when none matched."""
    route = scope.get("route")
    return getattr(route, "path", None) or "other"


