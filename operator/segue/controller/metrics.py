"""The operator's own Prometheus metrics, on a registry of their own.

Label cardinality stays bounded: per-Rollout series carry only namespace, rollout, and
values from fixed sets (phases, verdicts, versions, rollback reasons), gate series go when
a gate leaves the spec, and ``forget`` removes every series of a deleted Rollout.
Served on a port of their own (kopf's liveness endpoint has another).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Literal, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from segue.api import PHASES, RolloutStatus, Verdict
from segue.engine import PhaseChanged

# Not 8080: that is the default of kopf's liveness endpoint (--liveness). The chart's
# metrics.port and the operator's --metrics-port default to the same.
DEFAULT_METRICS_PORT: Final = 8081
DEFAULT_METRICS_ADDR: Final = "0.0.0.0"

ReasonKind = Literal["gate", "abort", "dependency", "other"]
REASON_KINDS: Final[tuple[ReasonKind, ...]] = get_args(ReasonKind)
VERDICTS: Final[tuple[Verdict, ...]] = get_args(Verdict)
VERSIONS: Final = ("new", "legacy")
RESULTS: Final = ("ok", "error")

# Reconciles are mostly API round trips: milliseconds to a few seconds, more when the
# API server is slow; the long tail is what to see.
_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Rollout versions per batched query: up to 200 (100 Rollouts, two versions each).
_BATCH_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200)
_ABORT_ACTOR: Final = "segue.dev/abort"


def rollback_reason(change: PhaseChanged) -> ReasonKind:
    """Classify a rollback from the phase change that started it: a gate's verdict, a
    person's abort annotation, or something else."""
    if change.verdict is not None:
        return "gate"
    if change.actor == _ABORT_ACTOR:
        return "abort"
    return "other"


GateReading = tuple[str | None, float | None, float | None]  # verdict, new, legacy


@dataclass
class _Rollout:
    """What the per-Rollout series show, and the rollback reasons counted for it (so that
    all of its series can be removed)."""

    phase: str | None = None
    step: int = 0
    weight: int = 0
    gates: dict[str, GateReading] = field(default_factory=dict)
    reasons: set[str] = field(default_factory=set)
    observed: bool = False


class RolloutGauges(Collector):
    """segue_rollout_phase, _step, _weight, segue_gate_value and _verdict, rendered from
    the records at each scrape."""

    def __init__(self, rollouts: dict[tuple[str, str], _Rollout], lock: threading.Lock) -> None:
        self._rollouts = rollouts
        self._lock = lock

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        rollout = ["namespace", "rollout"]
        gate = [*rollout, "gate"]
        return (
            GaugeMetricFamily(
                "segue_rollout_phase",
                "1 for the Rollout's current phase, 0 for the others.",
                labels=[*rollout, "phase"],
            ),
            GaugeMetricFamily(
                "segue_rollout_step", "Index of the Rollout's current step.", labels=rollout
            ),
            GaugeMetricFamily(
                "segue_rollout_weight",
                "Percentage of traffic on the new version, as read back from the router.",
                labels=rollout,
            ),
            GaugeMetricFamily(
                "segue_gate_value",
                "Last value of a gate's query per version; absent when there was no data.",
                labels=[*gate, "version"],
            ),
            GaugeMetricFamily(
                "segue_gate_verdict",
                "1 for a gate's last verdict, 0 for the others (all 0 before the first).",
                labels=[*gate, "verdict"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        phase, step, weight, value, verdict = families = self._families()
        with self._lock:
            records = [(k, r) for k, r in self._rollouts.items() if r.observed]
            snapshot = [(k, r.phase, r.step, r.weight, dict(r.gates)) for k, r in records]
        for (ns, name), current, index, percent, gates in snapshot:
            for p in PHASES:
                phase.add_metric([ns, name, p], 1 if p == current else 0)
            step.add_metric([ns, name], index)
            weight.add_metric([ns, name], percent)
            for gate, (last, new, legacy) in gates.items():
                for version, reading in (("new", new), ("legacy", legacy)):
                    if reading is not None:
                        value.add_metric([ns, name, gate, version], reading)
                for v in VERDICTS:
                    verdict.add_metric([ns, name, gate, v], 1 if v == last else 0)
        return families


class OperatorMetrics:
    """Metrics the controller updates. Thread-safe, as prometheus_client is."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        rollout = ("namespace", "rollout")
        # The per-Rollout gauges are rendered at scrape time from one small record per
        # Rollout (RolloutGauges): a prometheus_client child per series costs about 0.7 KiB,
        # and a Rollout with two gates has 24 series.
        self._rollouts: dict[tuple[str, str], _Rollout] = {}
        self._lock = threading.Lock()
        r.register(RolloutGauges(self._rollouts, self._lock))
        self.rollbacks = Counter(
            "segue_rollbacks",
            "Rollbacks started, by kind of reason (gate, abort, dependency, other).",
            (*rollout, "reason"),
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "segue_reconcile_duration_seconds",
            "Time taken by one reconcile of a Rollout.",
            ("result",),
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.notifications_dropped = Counter(
            "segue_notifications_dropped",
            "Notifications dropped before delivery (queue full, or shutdown).",
            registry=r,
        )
        self.notifications_failed = Counter(
            "segue_notifications_failed",
            "Notifications a receiver did not accept after the retries.",
            registry=r,
        )
        self.events_dropped = Counter(
            "segue_events_dropped",
            "Kubernetes Events not posted because more were waiting than the queue holds "
            "(Normal ones first), by type.",
            ("type",),
            registry=r,
        )
        self.kube_requests = Counter(
            "segue_kube_requests",
            "Requests the operator sent to the Kubernetes API, by HTTP method: its writes, "
            "reads of Secrets and its Events (POST); the watches and their listings are not "
            "included.",
            ["method"],
            registry=r,
        )
        self.shard = Gauge(
            "segue_shard_serving",
            "1 while this process serves its shard (labels: its index and the shard count), "
            "0 while it stands by or waits for processes of another shard count to stop.",
            ("shard", "shards"),
            registry=r,
        )
        self.metric_queries = Counter(
            "segue_metric_queries",
            "Queries sent to metric providers, by provider and gate template (custom: a "
            "gate's own query); a batched query serving many Rollouts counts once.",
            ("provider", "template"),
            registry=r,
        )
        self.metric_query_batch_size = Histogram(
            "segue_metric_query_batch_size",
            "Rollout versions served by one query sent to a metric provider (1: a query of "
            "its own).",
            ("provider",),
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        # Both results exist from the start, so a ratio of errors reads 0 rather than nothing.
        for result in RESULTS:
            self.reconcile_duration.labels(result)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def observe(self, namespace: str, name: str, status: RolloutStatus) -> None:
        """Set the Rollout's phase, step, weight and gate series from its status."""
        gates: dict[str, GateReading] = {
            g.name: (g.verdict, g.value, g.legacy_value) for g in status.gates
        }
        with self._lock:
            record = self._rollouts.setdefault((namespace, name), _Rollout())
            record.phase, record.step, record.weight = status.phase, status.step, status.weight
            record.gates = gates
            record.observed = True

    def decided(
        self,
        namespace: str,
        name: str,
        old: RolloutStatus | None,
        new: RolloutStatus,
        obj: object = None,
        changes: Sequence[PhaseChanged] = (),
    ) -> None:
        """The controller's hook after a decision is applied: observe the new status, and
        count each rollback that starts, from the engine's phase changes."""
        self.observe(namespace, name, new)
        for change in changes:
            if change.new == "RollingBack":
                self.rollback(namespace, name, rollback_reason(change))

    def rollback(self, namespace: str, name: str, reason_kind: str) -> None:
        """Count a rollback. A reason outside the fixed set counts as "other"."""
        reason = reason_kind if reason_kind in REASON_KINDS else "other"
        with self._lock:
            self._rollouts.setdefault((namespace, name), _Rollout()).reasons.add(reason)
            self.rollbacks.labels(namespace, name, reason).inc()

    def shard_serving(self, index: int, count: int, serving: bool) -> None:
        self.shard.labels(str(index), str(count)).set(1 if serving else 0)

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of a Rollout (it was deleted)."""
        with self._lock:
            record = self._rollouts.pop((namespace, name), _Rollout())
            for reason in record.reasons:
                self.rollbacks.remove(namespace, name, reason)

    @contextmanager
    def reconcile_timer(self) -> Iterator[None]:
        """Time the body; an exception counts as result="error" and propagates."""
        start = time.perf_counter()
        result = "error"
        try:
            yield
            result = "ok"
        finally:
            self.reconcile_duration.labels(result).observe(time.perf_counter() - start)

    def event_dropped(self, type_: str) -> None:
        self.events_dropped.labels(type_).inc()

    def metric_query(self, provider: str, template: str, served: int) -> None:
        """Count a query sent to a metric provider (``segue.analysis.counting``)."""
        self.metric_queries.labels(provider, template).inc()
        self.metric_query_batch_size.labels(provider).observe(served)

    def notification_dropped(self) -> None:
        self.notifications_dropped.inc()

    def notification_failed(self) -> None:
        self.notifications_failed.inc()

    def serve(self, port: int = DEFAULT_METRICS_PORT, addr: str = DEFAULT_METRICS_ADDR) -> int:
        """Serve /metrics over HTTP from a daemon thread; returns the bound port (useful with
        port 0). Serving twice is an error."""
        if self._server is not None:
            raise RuntimeError("metrics are already served")
        self._server, self._thread = start_http_server(port, addr, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving (tests; the operator just exits)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
