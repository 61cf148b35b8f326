"""The traffic simulator against a real API server and a real Prometheus.

The simulator reads the live split from the cluster (ready replicas of a Deployment pair, or
an HTTPRoute's backend weights), Prometheus scrapes it every second, and the numbers that
come back through rate() follow both the split and error rates changed at run time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from segue.analysis.providers.base import RoundContext
from segue.analysis.providers.prometheus.client import PrometheusSettings
from segue.analysis.providers.prometheus.runtime import client_for_settings, evaluate_round
from segue.api.spec import Gate
from tests.e2e.support import Sim, deployment, httproute, launch_sim, wait_until

pytestmark = pytest.mark.e2e

RATE = 200.0


def start_sim(kube: Any, app: str, *source: str) -> Sim:
    return launch_sim(kube.kubeconfig, app, *source, rate=RATE)


def stop_sim(sim: Sim) -> None:
    assert sim.stop() == 0, "the simulator did not exit cleanly on SIGTERM"


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


def ready_replicas(kube: Any, namespace: str, name: str) -> int:
    out = kube.kubectl(
        "-n", namespace, "get", "deployment", name, "-o", "jsonpath={.status.readyReplicas}"
    ).stdout.strip()
    return int(out or 0)


def gate_round(prometheus: Any, app: str, weight: float) -> dict[str, Any]:
    labels = {"app": app, "window": "5s"}
    gates = [Gate(name=t, template=t, labels=labels) for t in ("error-rate", "throughput")]
    ctx = RoundContext("ns", app, "v1", "v2", "5s", weight)
    provider = client_for_settings(PrometheusSettings(address=prometheus.url, timeout_s=5))
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
        assert failing.verdict == "Fail" and failing.on_failure == "rollback"
        assert failing.value == pytest.approx(0.3, abs=0.03)

        # Scaling the new side up moves the split: 3 vs 3 ready pods is 50 %.
        kube.kubectl("-n", namespace, "scale", "deployment", "new", "--replicas=3")
        wait_until("weight 50", sim.weight, lambda w: w == 50.0)
        wait_until("new at 50 %", lambda: rps(prometheus, app, "v2"), near(100, 12))
    finally:
        stop_sim(sim)


def test_httproute_weights_and_no_data_at_weight_zero(kube, prometheus, namespace, crds, scraped):
    app = f"sim-{namespace}"

    def set_weights(legacy: int, new: int) -> None:
        assert legacy + new == 100
        route = json.dumps(httproute("app", "app-v1", "app-v2", legacy_weight=legacy))
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
