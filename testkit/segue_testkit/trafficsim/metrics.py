"""The simulator's Prometheus metrics: requests by version and status code, and latency;
by customer too when the simulator has customers."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from segue_testkit.trafficsim.synthesizer import Batch

LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Metrics:
    def __init__(
        self, app: str, version_labels: Mapping[str, str], *, by_customer: bool = False
    ) -> None:
        self.app = app
        self.version_labels = dict(version_labels)
        self.by_customer = by_customer
        extra = ["customer"] if by_customer else []
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "Requests served, by application, version and status code"
            + (" and customer." if by_customer else "."),
            ["app", "version", "code", *extra],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Request latency, by application and version" + (" and customer." if extra else "."),
            ["app", "version", *extra],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def record(self, batch: Batch) -> None:
        # Children are created on first use only: a version without traffic has no series.
        version = self.version_labels[batch.version]
        extra = [batch.customer or ""] if self.by_customer else []
        ok = batch.requests - batch.errors
        if ok:
            self.requests.labels(self.app, version, "200", *extra).inc(ok)
        if batch.errors:
            self.requests.labels(self.app, version, "500", *extra).inc(batch.errors)
        histogram = self.duration.labels(self.app, version, *extra)
        for latency in batch.latencies_s:
            histogram.observe(latency)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
