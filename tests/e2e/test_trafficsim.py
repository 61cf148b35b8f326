"""The traffic simulator against a real API server and a real Prometheus.

The simulator reads the live split from the cluster (ready replicas of a Deployment pair, or
an HTTPRoute's backend weights), Prometheus scrapes it every second, and the numbers that
come back through rate() follow both the split and error rates changed at run time.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from segue.analysis.provider import provider_for
from segue.analysis.round import evaluate_round
from segue.analysis.types import GateSpec, PrometheusSettings, RoundContext

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "trafficsim.py"
RATE = 200.0
T = TypeVar("T")


def wait_until(what: str, get: Callable[[], T], ok: Callable[[T], bool], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = get()
        if ok(last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}")


@dataclass
class Sim:
    proc: subprocess.Popen[str]
    host_port: str
    app: str

    @property
    def base(self) -> str:
        return f"http://{self.host_port}"

    def config(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/config", timeout=5) as r:
            body: dict[str, Any] = json.load(r)
        return body

    def put(self, patch: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.base}/config", data=json.dumps(patch).encode(), method="PUT"
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            body: dict[str, Any] = json.load(r)
        return body

    def weight(self) -> float | None:
        w = self.config()["weight"]
        return None if w is None else float(w)


def start_sim(kube: Any, app: str, *source: str) -> Sim:
    proc = subprocess.Popen(
        [
            sys.executable, str(SCRIPT), "--port", "0", "--app", app,
            "--legacy-version", "v1", "--new-version", "v2",
            "--rate", str(RATE), "--legacy-latency-ms", "50", "--new-latency-ms", "50",
            "--kubeconfig", kube.kubeconfig, *source,
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=kube.env,
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("listening on "):
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"simulator did not start: {line!r}\n{err}")
    return Sim(proc, line.removeprefix("listening on "), app)


def stop_sim(sim: Sim) -> None:
    sim.proc.send_signal(signal.SIGTERM)
    try:
        code = sim.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sim.proc.kill()
        sim.proc.wait()
        raise AssertionError("simulator ignored SIGTERM") from None
    finally:
        for stream in (sim.proc.stdout, sim.proc.stderr):
            if stream:
                stream.close()
    assert code == 0


@pytest.fixture
def scraped(prometheus: Any) -> Iterator[Callable[[Sim], None]]:
    jobs: list[str] = []

    def scrape(sim: Sim) -> None:
        job = f"trafficsim-{sim.app}"
        jobs.append(job)
        prometheus.add_scrape_target(job, sim.host_port)

    yield scrape
    for job in jobs:
        prometheus.remove_scrape_target(job)


def rps(prometheus: Any, app: str, version: str) -> float | None:
    value: float | None = prometheus.query(
        f'sum(rate(http_requests_total{{app="{app}",version="{version}"}}[5s]))'
    )
    return value


def error_ratio(prometheus: Any, app: str, version: str) -> float | None:
    value: float | None = prometheus.query(
        f'sum(rate(http_requests_total{{app="{app}",version="{version}",code=~"5.."}}[5s]))'
        f' / sum(rate(http_requests_total{{app="{app}",version="{version}"}}[5s]))'
    )
    return value


def near(target: float, tolerance: float) -> Callable[[float | None], bool]:
    """A check that a value is there and within tolerance of target."""
    return lambda v: v is not None and abs(v - target) <= tolerance


def deployment(name: str, app: str, replicas: int) -> dict[str, Any]:
    labels = {"app": app, "deployment": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }


def ready_replicas(kube: Any, namespace: str, name: str) -> int:
    out = kube.kubectl(
        "-n", namespace, "get", "deployment", name, "-o", "jsonpath={.status.readyReplicas}"
    ).stdout.strip()
    return int(out or 0)


def gate_round(prometheus: Any, app: str, weight: float) -> dict[str, Any]:
    labels = {"app": app, "window": "5s"}
    gates = [GateSpec(t, template=t, labels=labels) for t in ("error-rate", "throughput")]
    ctx = RoundContext("ns", app, "v1", "v2", "5s", weight)
    provider = provider_for(PrometheusSettings(address=prometheus.url, timeout_s=5))
    r = asyncio.run(evaluate_round(gates, ctx, provider, datetime.now(UTC)))
    assert r.error is None
    return {v.name: v for v in r.results}


def test_deployment_pair_split_and_runtime_error_rate(kube, prometheus, namespace, scraped):
    app = f"sim-{namespace}"
    for name, replicas in (("legacy", 3), ("new", 1)):
        kube.kubectl(
            "-n", namespace, "apply", "-f", "-", input=json.dumps(deployment(name, app, replicas))
        )
    wait_until("3 legacy pods", lambda: ready_replicas(kube, namespace, "legacy"), near(3, 0))
    wait_until("1 new pod", lambda: ready_replicas(kube, namespace, "new"), near(1, 0))

    sim = start_sim(kube, app, "--deployments", f"{namespace}/legacy,{namespace}/new")
    try:
        assert sim.weight() == 25.0  # read before the port was announced
        scraped(sim)
        wait_until("new at 25 % of 200 rps", lambda: rps(prometheus, app, "v2"), near(50, 8))
        wait_until("legacy at 75 %", lambda: rps(prometheus, app, "v1"), near(150, 15))
        assert error_ratio(prometheus, app, "v2") in (None, 0.0)

        verdicts = gate_round(prometheus, app, 25)
        assert verdicts["error-rate"].verdict == "Pass"
        assert verdicts["throughput"].verdict == "Pass"
        assert verdicts["throughput"].value == pytest.approx(RATE, rel=0.15)

        # A failure injected at run time shows up in rate() within a few scrapes.
        sim.put({"new": {"errorRate": 0.3}})
        wait_until(
            "30 % errors on new", lambda: error_ratio(prometheus, app, "v2"), near(0.3, 0.03)
        )
        assert error_ratio(prometheus, app, "v1") in (None, 0.0)
        failing = gate_round(prometheus, app, 25)["error-rate"]
        assert failing.verdict == "Fail" and failing.severity == "rollback"
        assert failing.value == pytest.approx(0.3, abs=0.03)

        # Scaling the new side up moves the split: 3 vs 3 ready pods is 50 %.
        kube.kubectl("-n", namespace, "scale", "deployment", "new", "--replicas=3")
        wait_until("weight 50", sim.weight, lambda w: w == 50.0)
        wait_until("new at 50 %", lambda: rps(prometheus, app, "v2"), near(100, 12))
    finally:
        stop_sim(sim)


def ensure_httproute_crd(kube: Any) -> None:
    have = kube.kubectl("get", "crd", "httproutes.gateway.networking.k8s.io", check=False)
    if have.returncode == 0:
        return
    try:
        cluster = importlib.import_module("cluster")  # hack/, on sys.path via tests/conftest.py
        paths = [p for p in cluster.gateway_api_crds() if p.name.endswith("_httproutes.yaml")]
    except Exception as e:  # the CRDs come from a Go module; no Go, no CRDs
        pytest.skip(f"Gateway API CRDs not installed and not obtainable: {e}")
    for path in paths:
        kube.kubectl("apply", "--server-side", "-f", str(path))
    kube.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/httproutes.gateway.networking.k8s.io",
    )  # fmt: skip


def httproute(name: str, legacy_weight: int, new_weight: int) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "app-v1", "port": 80, "weight": legacy_weight},
                        {"name": "app-v2", "port": 80, "weight": new_weight},
                    ]
                }
            ],
        },
    }


def test_httproute_weights_and_no_data_at_weight_zero(kube, prometheus, namespace, scraped):
    ensure_httproute_crd(kube)
    app = f"sim-{namespace}"

    def set_weights(legacy: int, new: int) -> None:
        route = json.dumps(httproute("app", legacy, new))
        kube.kubectl("-n", namespace, "apply", "-f", "-", input=route)

    set_weights(100, 0)
    sim = start_sim(
        kube, app,
        "--httproute", f"{namespace}/app", "--legacy-backend", "app-v1", "--new-backend", "app-v2",
    )  # fmt: skip
    try:
        assert sim.weight() == 0.0
        scraped(sim)
        wait_until("legacy takes everything", lambda: rps(prometheus, app, "v1"), near(200, 20))
        # The new version has had no request at all: no series, so no data, so inconclusive.
        assert rps(prometheus, app, "v2") is None
        verdicts = gate_round(prometheus, app, 0)
        assert verdicts["error-rate"].verdict == "Inconclusive"
        assert verdicts["throughput"].verdict == "Inconclusive"

        set_weights(80, 20)
        wait_until("weight 20", sim.weight, lambda w: w == 20.0, timeout=10)
        wait_until("new at 20 %", lambda: rps(prometheus, app, "v2"), near(40, 6))
        verdicts = gate_round(prometheus, app, 20)
        assert verdicts["error-rate"].verdict == "Pass"
    finally:
        stop_sim(sim)
