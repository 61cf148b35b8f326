#!/usr/bin/env python3
"""Traffic simulator: synthesised requests to a legacy and a new version, split by the live
weight read from the cluster, exposed as Prometheus metrics.

No pods serve anything in the local cluster (KWOK simulates them), so requests are not sent
but counted: every tick adds ``rate * dt * share`` requests to each version, with that
version's error rate and a latency drawn around its mean. Counts are exact (fractions carry
over to the next tick), so ``rate()`` in Prometheus reads back the configured numbers.

    python hack/trafficsim.py --port 0 --app checkout \\
        --legacy-version v1 --new-version v2 \\
        --httproute shop/checkout --legacy-backend checkout-v1 --new-backend checkout-v2
    python hack/trafficsim.py --port 0 --deployments shop/checkout-v1,shop/checkout-v2 ...
    python hack/trafficsim.py --port 0 --static-weight 25 ...      # no cluster needed

The first line on stdout is ``listening on 127.0.0.1:PORT``. On that port:

    GET  /metrics   http_requests_total{app,version,code}, http_request_duration_seconds
    GET  /config    {"rate": 200, "weight": 25.0, "legacy": {...}, "new": {...}}
    PUT  /config    {"new": {"errorRate": 0.2, "latencyMs": 300}} (partial updates)

A version whose share is 0 gets no requests and so has no series at all: its queries return
no data, as a real version without traffic would.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Protocol, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

VERSIONS = ("legacy", "new")
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Spread of latencies around the mean (lognormal sigma): p99 is about 1.7x the mean.
LATENCY_SIGMA = 0.25
MAX_TICK_S = 5.0


def log(msg: str) -> None:
    print(f"trafficsim: {msg}", file=sys.stderr, flush=True)


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """How one version answers: share of errors (0..1) and mean latency."""

    error_rate: float = 0.0
    latency_ms: float = 50.0

    def to_json(self) -> dict[str, float]:
        return {"errorRate": self.error_rate, "latencyMs": self.latency_ms}


@dataclass(frozen=True)
class SimConfig:
    rate: float = 200.0
    legacy: Behaviour = field(default_factory=Behaviour)
    new: Behaviour = field(default_factory=Behaviour)

    def behaviour(self, version: str) -> Behaviour:
        return self.legacy if version == "legacy" else self.new

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "legacy": self.legacy.to_json(), "new": self.new.to_json()}


def _number(where: str, raw: object, lo: float, hi: float = math.inf) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{where} must be a number, got {raw!r}")
    value = float(raw)
    if not (lo <= value <= hi) or math.isnan(value):
        raise ValueError(f"{where} must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def apply_patch(config: SimConfig, patch: object) -> SimConfig:
    """``config`` updated by a partial JSON object; ValueError names what is wrong."""
    if not isinstance(patch, dict):
        raise ValueError("expected a JSON object")
    unknown = set(patch) - {"rate", *VERSIONS}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; known: rate, legacy, new")
    result = config
    if "rate" in patch:
        result = replace(result, rate=_number("rate", patch["rate"], 0, 1e6))
    for version in VERSIONS:
        if version not in patch:
            continue
        part = patch[version]
        if not isinstance(part, dict):
            raise ValueError(f"{version} must be an object like {{'errorRate': 0.1}}")
        bad = set(part) - {"errorRate", "latencyMs"}
        if bad:
            raise ValueError(
                f"unknown keys in {version}: {sorted(bad)}; known: errorRate, latencyMs"
            )
        b = result.behaviour(version)
        if "errorRate" in part:
            b = replace(b, error_rate=_number(f"{version}.errorRate", part["errorRate"], 0, 1))
        if "latencyMs" in part:
            b = replace(b, latency_ms=_number(f"{version}.latencyMs", part["latencyMs"], 0, 1e6))
        result = replace(result, legacy=b) if version == "legacy" else replace(result, new=b)
    return result


# --- weight sources --------------------------------------------------------------------------


def weight_from_httproute(
    route: Mapping[str, Any], legacy_backend: str, new_backend: str, rule_index: int = 0
) -> float | None:
    """Percentage of traffic the new backend gets from an HTTPRoute rule's backendRefs.

    A backendRef without ``weight`` weighs 1 (Gateway API default); a backend not listed
    gets nothing. None when neither backend gets anything (no traffic is sent).
    """
    rules = route.get("spec", {}).get("rules") or []
    if rule_index >= len(rules):
        raise ValueError(f"HTTPRoute has {len(rules)} rules, no rule {rule_index}")
    weights = {legacy_backend: 0, new_backend: 0}
    for ref in rules[rule_index].get("backendRefs") or []:
        name = ref.get("name")
        if name in weights:
            weights[name] += int(ref.get("weight", 1))
    total = weights[legacy_backend] + weights[new_backend]
    if total <= 0:
        return None
    return 100.0 * weights[new_backend] / total


def weight_from_ready(legacy_ready: int, new_ready: int) -> float | None:
    """Percentage for the new version when traffic follows ready pods (no mesh)."""
    total = legacy_ready + new_ready
    if total <= 0:
        return None
    return 100.0 * new_ready / total


class WeightSource(Protocol):
    def describe(self) -> str: ...
    def read(self) -> float | None: ...


@dataclass
class StaticWeight:
    weight: float

    def describe(self) -> str:
        return f"static weight {self.weight:g}"

    def read(self) -> float | None:
        return self.weight


def _split(ref: str, what: str) -> tuple[str, str]:
    ns, sep, name = ref.partition("/")
    if not sep or not ns or not name:
        raise argparse.ArgumentTypeError(f"{what} must be NAMESPACE/NAME, got {ref!r}")
    return ns, name


def _api_client(kubeconfig: str | None) -> Any:
    from kubernetes import config

    # The config loaders carry no annotations.
    if kubeconfig or os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        new_client = cast(Callable[..., Any], config.new_client_from_config)
        return new_client(config_file=kubeconfig)
    cast(Callable[[], None], config.load_incluster_config)()
    from kubernetes import client

    return client.ApiClient()


class HTTPRouteWeight:
    def __init__(
        self, api_client: Any, ref: str, legacy_backend: str, new_backend: str, rule_index: int
    ) -> None:
        from kubernetes import client

        self.namespace, self.name = _split(ref, "--httproute")
        self.legacy_backend, self.new_backend, self.rule_index = (
            legacy_backend,
            new_backend,
            rule_index,
        )
        self.api = client.CustomObjectsApi(api_client)

    def describe(self) -> str:
        return f"HTTPRoute {self.namespace}/{self.name} rule {self.rule_index}"

    def read(self) -> float | None:
        route = self.api.get_namespaced_custom_object(
            "gateway.networking.k8s.io",
            "v1",
            self.namespace,
            "httproutes",
            self.name,
            _request_timeout=2,
        )
        return weight_from_httproute(
            cast(Mapping[str, Any], route), self.legacy_backend, self.new_backend, self.rule_index
        )


class DeploymentsWeight:
    def __init__(self, api_client: Any, refs: str) -> None:
        from kubernetes import client

        parts = refs.split(",")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError("--deployments must be NS/LEGACY,NS/NEW")
        self.legacy = _split(parts[0], "--deployments")
        self.new = _split(parts[1], "--deployments")
        self.api = client.AppsV1Api(api_client)

    def describe(self) -> str:
        return f"ready replicas of {'/'.join(self.legacy)} and {'/'.join(self.new)}"

    def _ready(self, ref: tuple[str, str]) -> int:
        # Raw JSON rather than the client's model: only one field matters, and the model's
        # strict validation would trip on any skew between client and server versions.
        resp: Any = self.api.read_namespaced_deployment(
            ref[1], ref[0], _preload_content=False, _request_timeout=2
        )
        status = json.loads(resp.data).get("status") or {}
        return int(status.get("readyReplicas") or 0)

    def read(self) -> float | None:
        return weight_from_ready(self._ready(self.legacy), self._ready(self.new))


# --- synthesis -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """Requests one version received in one tick."""

    version: str
    requests: int
    errors: int
    latencies_s: tuple[float, ...]


def shares(weight: float | None) -> dict[str, float]:
    if weight is None:
        return {"legacy": 0.0, "new": 0.0}
    new = min(max(weight, 0.0), 100.0) / 100.0
    return {"legacy": 1.0 - new, "new": new}


class Synthesizer:
    """Turns elapsed time, weight and configuration into exact request counts.

    Fractions of requests and of errors carry over between ticks, so over any span the
    counts match ``rate * seconds * share`` (and the error rate) to within one request.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.random = random.Random(seed)
        self.carry = dict.fromkeys(VERSIONS, 0.0)
        self.error_carry = dict.fromkeys(VERSIONS, 0.0)

    def step(self, dt: float, weight: float | None, config: SimConfig) -> list[Batch]:
        batches = []
        for version, share in shares(weight).items():
            if share <= 0:
                # Forget fractions: a version that gets traffic again starts clean.
                self.carry[version] = self.error_carry[version] = 0.0
                continue
            b = config.behaviour(version)
            self.carry[version] += config.rate * dt * share
            n = int(self.carry[version])
            self.carry[version] -= n
            if n == 0:
                continue
            self.error_carry[version] += n * b.error_rate
            errors = min(n, int(self.error_carry[version]))
            self.error_carry[version] -= errors
            batches.append(Batch(version, n, errors, self.latencies(n, b.latency_ms)))
        return batches

    def latencies(self, n: int, mean_ms: float) -> tuple[float, ...]:
        if mean_ms <= 0:
            return (0.0,) * n
        # Lognormal with this mean: always positive, with a realistic right tail.
        mu = math.log(mean_ms / 1000.0) - LATENCY_SIGMA**2 / 2
        return tuple(self.random.lognormvariate(mu, LATENCY_SIGMA) for _ in range(n))


class Metrics:
    def __init__(self, app: str, version_labels: Mapping[str, str]) -> None:
        self.app = app
        self.version_labels = dict(version_labels)
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "Requests served, by application, version and status code.",
            ["app", "version", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Request latency, by application and version.",
            ["app", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def record(self, batch: Batch) -> None:
        # Children are created on first use only: a version without traffic has no series.
        version = self.version_labels[batch.version]
        ok = batch.requests - batch.errors
        if ok:
            self.requests.labels(self.app, version, "200").inc(ok)
        if batch.errors:
            self.requests.labels(self.app, version, "500").inc(batch.errors)
        histogram = self.duration.labels(self.app, version)
        for latency in batch.latencies_s:
            histogram.observe(latency)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# --- the running simulator -------------------------------------------------------------------


class Simulator:
    def __init__(
        self,
        source: WeightSource,
        metrics: Metrics,
        config: SimConfig,
        *,
        tick_s: float = 0.1,
        poll_s: float = 0.5,
        seed: int | None = None,
    ) -> None:
        self.source = source
        self.metrics = metrics
        self.synth = Synthesizer(seed)
        self.tick_s = tick_s
        self.poll_s = poll_s
        self.lock = threading.Lock()
        self.config = config
        self.weight: float | None = None
        self.weight_error: str | None = None
        self.stop = threading.Event()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            out = self.config.to_json()
            out["weight"] = self.weight
            out["weightSource"] = self.source.describe()
            out["weightError"] = self.weight_error
            return out

    def update(self, patch: object) -> dict[str, Any]:
        with self.lock:
            self.config = apply_patch(self.config, patch)
        return self.snapshot()

    def refresh_weight(self) -> None:
        try:
            weight = self.source.read()
        except Exception as e:  # keep the last weight; the cluster may come back
            message = f"{type(e).__name__}: {e}"
            with self.lock:
                changed = message != self.weight_error
                self.weight_error = message
            if changed:
                log(f"cannot read weight from {self.source.describe()}: {message}")
            return
        with self.lock:
            if weight != self.weight:
                log(f"weight {self.weight} -> {weight}")
            self.weight, self.weight_error = weight, None

    def poll_weight(self) -> None:
        """Runs in its own thread so a slow API server never stalls the ticks."""
        while not self.stop.wait(self.poll_s):
            self.refresh_weight()

    def run_ticks(self) -> None:
        last = time.monotonic()
        deadline = last
        while True:
            deadline += self.tick_s
            if self.stop.wait(max(0.0, deadline - time.monotonic())):
                return
            now = time.monotonic()
            # Elapsed time, not the nominal tick, so rates stay exact when a tick runs late;
            # capped so a suspended process does not dump a burst on resume.
            dt = min(now - last, MAX_TICK_S)
            last = now
            with self.lock:
                weight, config = self.weight, self.config
            for batch in self.synth.step(dt, weight, config):
                self.metrics.record(batch)
            if deadline < now - MAX_TICK_S:
                deadline = now


def make_handler(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "trafficsim"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scraped every second; the noise would hide the useful lines

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: object) -> None:
            self._send(status, json.dumps(payload).encode() + b"\n", "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, sim.metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path == "/config":
                self._json(200, sim.snapshot())
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            else:
                self._json(404, {"error": f"no such path {path}"})

        def do_PUT(self) -> None:
            if self.path.split("?", 1)[0] != "/config":
                self._json(404, {"error": f"no such path {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                patch = json.loads(self.rfile.read(length) or b"{}")
                self._json(200, sim.update(patch))
            except ValueError as e:  # JSONDecodeError is a ValueError too
                self._json(400, {"error": str(e)})

        do_PATCH = do_PUT

    return Handler


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Synthesise legacy/new traffic split by the live weight; serve /metrics."
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--app", required=True, help="value of the app label")
    p.add_argument("--legacy-version", required=True, help="version label of the legacy side")
    p.add_argument("--new-version", required=True, help="version label of the new side")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--httproute", metavar="NS/NAME", help="read weights from this HTTPRoute")
    src.add_argument(
        "--deployments", metavar="NS/LEGACY,NS/NEW", help="split by ready replicas of these"
    )
    src.add_argument("--static-weight", type=float, metavar="PERCENT", help="fixed new weight")
    p.add_argument("--legacy-backend", help="backendRef name of legacy in the HTTPRoute")
    p.add_argument("--new-backend", help="backendRef name of new in the HTTPRoute")
    p.add_argument("--rule-index", type=int, default=0, help="HTTPRoute rule to read")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument("--rate", type=float, default=200.0, help="total requests per second")
    p.add_argument("--legacy-error-rate", type=float, default=0.0)
    p.add_argument("--new-error-rate", type=float, default=0.0)
    p.add_argument("--legacy-latency-ms", type=float, default=50.0)
    p.add_argument("--new-latency-ms", type=float, default=50.0)
    p.add_argument("--tick", type=float, default=0.1, help="seconds between synthesis ticks")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between weight reads")
    p.add_argument("--seed", type=int, default=None, help="seed of the latency draws")
    args = p.parse_args(argv)
    if args.httproute and not (args.legacy_backend and args.new_backend):
        p.error("--httproute needs --legacy-backend and --new-backend")
    if args.tick <= 0 or args.poll <= 0:
        p.error("--tick and --poll must be positive")
    return args


def build_source(args: argparse.Namespace) -> WeightSource:
    if args.static_weight is not None:
        return StaticWeight(args.static_weight)
    api_client = _api_client(args.kubeconfig)
    if args.httproute:
        return HTTPRouteWeight(
            api_client, args.httproute, args.legacy_backend, args.new_backend, args.rule_index
        )
    return DeploymentsWeight(api_client, args.deployments)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = apply_patch(
            SimConfig(),
            {
                "rate": args.rate,
                "legacy": {
                    "errorRate": args.legacy_error_rate,
                    "latencyMs": args.legacy_latency_ms,
                },
                "new": {"errorRate": args.new_error_rate, "latencyMs": args.new_latency_ms},
            },
        )
        source = build_source(args)
    except (ValueError, argparse.ArgumentTypeError) as e:
        log(str(e))
        return 2
    # *_created series only add noise for rate() users. (The function is unannotated.)
    cast(Callable[[], None], disable_created_metrics)()
    metrics = Metrics(args.app, {"legacy": args.legacy_version, "new": args.new_version})
    sim = Simulator(source, metrics, config, tick_s=args.tick, poll_s=args.poll, seed=args.seed)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sim.stop.set()

    # Installed before the first (possibly slow) weight read, so SIGTERM is always clean.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Read once before announcing the port, so whoever waits for that line finds traffic
    # already flowing by the live weight.
    sim.refresh_weight()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(sim))
    server.daemon_threads = True
    port = server.server_address[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    log(f"weight from {source.describe()}; {config.rate:g} rps")

    threads = [
        threading.Thread(target=server.serve_forever, name="http", daemon=True),
        threading.Thread(target=sim.poll_weight, name="weight", daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        sim.run_ticks()
    finally:
        sim.stop.set()
        server.shutdown()
        server.server_close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
