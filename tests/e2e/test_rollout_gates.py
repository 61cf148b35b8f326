"""Health gates end to end: the real operator, a real Prometheus scraping the traffic
simulator, whose per-version traffic follows the HTTPRoute weights Segue writes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import (
    PrivatePrometheus,
    Rollouts,
    Sim,
    WeightRecorder,
    apply,
    launch_sim,
    shop_pair,
    start_operator,
    wait_until,
)

pytestmark = pytest.mark.e2e


@dataclass
class Setup:
    rollouts: Rollouts
    sim: Sim
    app: str


@pytest.fixture
def setup(kube: Any, namespace: str, crds: None, prometheus: Any) -> Iterator[Setup]:
    rollouts = shop_pair(kube, namespace)
    app = f"shop-{uuid.uuid4().hex[:6]}"
    sim = launch_sim(
        kube.kubeconfig,
        app,
        "--httproute",
        f"{namespace}/shop",
        "--legacy-backend",
        "shop-v1",
        "--new-backend",
        "shop-v2",
    )
    job = f"sim-{app}"
    prometheus.add_scrape_target(job, sim.host_port)
    try:
        yield Setup(rollouts, sim, app)
    finally:
        prometheus.remove_scrape_target(job)
        sim.stop()


def gated(app: str, steps: list[Any], gates: list[Any], **spec: Any) -> Any:
    analysis = {"interval": "2s", "gates": gates, **spec.pop("analysis", {})}
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "shop"},
        "spec": {
            "legacy": {"deployment": "shop-v1", "version": "v1"},
            "new": {"deployment": "shop-v2", "version": "v2"},
            "traffic": {
                "gatewayAPI": {
                    "httpRoute": "shop",
                    "legacyBackend": "shop-v1",
                    "newBackend": "shop-v2",
                }
            },
            "steps": steps,
            "analysis": analysis,
            **spec,
        },
    }


def error_rate(app: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "errors",
        "template": "error-rate",
        "labels": {"app": app, "window": "5s"},
        **extra,
    }


def latency(app: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "latency",
        "template": "latency",
        "labels": {"app": app, "window": "5s"},
        **extra,
    }


def gate(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((g for g in status.get("gates", []) if g["name"] == name), {})


def test_healthy_metrics_promote_to_100(kube, namespace, setup, operator):
    steps = [{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"setWeight": 50}]
    apply(kube, namespace, gated(setup.app, steps, [error_rate(setup.app), latency(setup.app)]))
    wait_until("Succeeded", lambda: setup.rollouts.phase("shop"), lambda p: p == "Succeeded", 120)
    status = setup.rollouts.status("shop")
    errors = gate(status, "errors")
    assert errors["verdict"] == "Pass" and errors["value"] is not None and errors["value"] < 0.05
    assert errors["bound"] == "<= 0.05"
    assert gate(status, "latency")["legacyValue"] is not None


def test_errors_at_25_percent_roll_back_in_one_write(kube, namespace, setup, operator):
    recorder = WeightRecorder(setup.rollouts, "shop")
    steps = [{"setWeight": 25}, {"approval": {}}]
    apply(kube, namespace, gated(setup.app, steps, [error_rate(setup.app)]))
    wait_until(
        "a passing round at 25 %",
        lambda: setup.rollouts.status("shop"),
        lambda s: (
            s.get("phase") == "AwaitingApproval" and gate(s, "errors").get("verdict") == "Pass"
        ),
        90,
    )
    setup.sim.put({"new": {"errorRate": 0.2}})
    wait_until("RolledBack", lambda: setup.rollouts.phase("shop"), lambda p: p == "RolledBack", 60)
    seen = recorder.stop()
    assert seen == [0, 25, 0]  # straight from 25 to 0: one write, no ramp
    status = setup.rollouts.status("shop")
    decided = [h for h in status["history"] if h.get("gate") == "errors"]
    assert decided, status["history"]
    assert decided[0]["value"] > 0.05 and decided[0]["bound"] == "<= 0.05"
    assert status["rollback"]["mode"] == "immediate"
    warnings = [(r, m) for t, r, m in setup.rollouts.events("shop") if t == "Warning"]
    assert any(r == "RollingBack" and "errors" in m for r, m in warnings), warnings


def test_slow_new_version_ramps_down_gracefully(kube, namespace, setup, operator):
    recorder = WeightRecorder(setup.rollouts, "shop")
    steps = [{"setWeight": 60}, {"approval": {}}]
    spec = gated(
        setup.app,
        steps,
        [latency(setup.app, failureLimit=1)],
        rollback={"mode": "graceful", "duration": "10s"},
    )
    apply(kube, namespace, spec)
    wait_until(
        "a passing round at 60 %",
        lambda: setup.rollouts.status("shop"),
        lambda s: (
            s.get("phase") == "AwaitingApproval" and gate(s, "latency").get("verdict") == "Pass"
        ),
        90,
    )
    setup.sim.put({"new": {"latencyMs": 150}})  # 3x legacy
    wait_until(
        "RollingBack", lambda: setup.rollouts.phase("shop"), lambda p: p == "RollingBack", 60
    )
    started = time.monotonic()
    wait_until("RolledBack", lambda: setup.rollouts.phase("shop"), lambda p: p == "RolledBack", 60)
    took = time.monotonic() - started
    seen = recorder.stop()
    ramp = seen[seen.index(60) :]
    assert ramp[-1] == 0 and len(ramp) >= 4, seen  # several steps down, not one jump
    assert ramp == sorted(ramp, reverse=True), seen
    assert took >= 5, f"a 10s graceful ramp finished in {took:.1f}s"
    status = setup.rollouts.status("shop")
    assert status["rollback"]["mode"] == "graceful"
    decided = [h for h in status["history"] if h.get("gate") == "latency"]
    assert decided and decided[0]["value"] > 2 * decided[0]["legacyValue"]


def test_prometheus_down_pauses_and_resumes(kube, namespace, setup, crds, tmp_path: Path):
    prom = PrivatePrometheus(tmp_path, setup.sim.host_port)
    prom.start()
    op = start_operator(kube.kubeconfig, tmp_path / "op.log", [namespace], prometheus=prom.url)
    try:
        steps = [{"setWeight": 20}, {"pause": {"duration": "12s"}}, {"setWeight": 100}]
        spec = gated(setup.app, steps, [error_rate(setup.app)], analysis={"unreachableLimit": "3s"})
        apply(kube, namespace, spec)
        wait_until("holding at 20", lambda: setup.rollouts.new_weight("shop"), lambda w: w == 20)
        prom.stop()
        status = wait_until(
            "paused on the unreachable Prometheus",
            lambda: setup.rollouts.status("shop"),
            lambda s: s.get("phase") == "Paused",
            30,
        )
        assert status["pausedReason"] == "AnalysisUnavailable"
        time.sleep(14)  # past the hold: without analysis nothing promotes
        assert setup.rollouts.phase("shop") == "Paused"
        assert setup.rollouts.new_weight("shop") == 20
        prom.start()
        wait_until(
            "Succeeded", lambda: setup.rollouts.phase("shop"), lambda p: p == "Succeeded", 90
        )
    finally:
        op.stop()
        prom.stop()
        print(op.log()[-4000:])


def test_no_traffic_on_new_is_inconclusive(kube, namespace, crds, prometheus, operator):
    rollouts = shop_pair(kube, namespace, replicas=1)
    app = f"idle-{uuid.uuid4().hex[:6]}"
    # The simulator sends everything to legacy whatever the route says: new has no data.
    sim = launch_sim(kube.kubeconfig, app, "--static-weight", "0")
    prometheus.add_scrape_target(f"sim-{app}", sim.host_port)
    try:
        steps = [{"setWeight": 10}, {"pause": {"duration": "1s"}}, {"setWeight": 100}]
        apply(kube, namespace, gated(app, steps, [error_rate(app)]))
        status = wait_until(
            "inconclusive rounds",
            lambda: rollouts.status("shop"),
            lambda s: gate(s, "errors").get("consecutiveNoData", 0) >= 3,
            60,
        )
        errors = gate(status, "errors")
        assert errors["verdict"] == "Inconclusive" and errors["consecutiveFailures"] == 0
        assert status["phase"] == "Paused" and status["pausedReason"] == "NoData"
        assert rollouts.new_weight("shop") == 10  # neither promoted nor rolled back
    finally:
        prometheus.remove_scrape_target(f"sim-{app}")
        sim.stop()


def test_injected_label_value_cannot_change_the_query(kube, namespace, setup, operator):
    crafted = setup.app + '"} or vector(0) or up{x="'
    steps = [{"setWeight": 10}, {"pause": {"duration": "1s"}}, {"setWeight": 100}]
    gates = [
        {"name": "errors", "template": "error-rate", "labels": {"app": crafted, "window": "5s"}}
    ]
    apply(kube, namespace, gated(setup.app, steps, gates))
    status = wait_until(
        "the gate to be judged",
        lambda: setup.rollouts.status("shop"),
        lambda s: gate(s, "errors").get("consecutiveNoData", 0) >= 2,
        60,
    )
    # Escaped, the value is one literal label value that matches nothing: no data, never a
    # pass (unescaped, "or vector(0)" would have made it pass with 0 errors).
    assert gate(status, "errors")["verdict"] == "Inconclusive"
    assert status["phase"] != "Succeeded" and setup.rollouts.new_weight("shop") == 10
    # A version label is a Kubernetes label value: the API server refuses a crafted one.
    bad = gated(setup.app, steps, [error_rate(setup.app)])
    bad["metadata"]["name"] = "crafted"
    bad["spec"]["new"]["version"] = 'v2"} or vector(1) #'
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", input=_yaml(bad), check=False)
    assert result.returncode != 0 and "spec.new.version" in result.stderr


def test_query_rejected_by_prometheus_pauses_naming_the_gate(kube, namespace, setup, operator):
    steps = [{"setWeight": 10}, {"pause": {"duration": "1s"}}, {"setWeight": 100}]
    gates = [
        {
            "name": "broken",
            "query": 'sum(rate(http_requests_total{version="{{ version }}"}[',
            "max": 1,
        }
    ]
    apply(kube, namespace, gated(setup.app, steps, gates))
    status = wait_until(
        "a paused Rollout",
        lambda: setup.rollouts.status("shop"),
        lambda s: s.get("phase") == "Paused",
        60,
    )
    assert status["pausedReason"] == "QueryError"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert any("broken" in c.get("message", "") for c in conditions.values()), conditions
    assert setup.rollouts.new_weight("shop") == 10


def _yaml(doc: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(doc)


def test_a_new_version_that_cannot_keep_up_fails_the_throughput_gate(
    kube, namespace, setup, operator
):
    """The simulator's throughput knob: the new version completes only half the requests
    routed to it, so per unit of traffic share it serves half of legacy's rate, below the
    throughput template's 90 % bound; the gate fails and the Rollout rolls back gracefully
    (the template's onFailure), while the same plan with both at full throughput holds."""
    gate_spec = {
        "name": "throughput",
        "template": "throughput",
        "labels": {"app": setup.app, "window": "5s"},
        # For one rate window after the weight moves, the new version's rate still counts
        # the seconds before it had traffic; five rounds (10 s) outlast that.
        "failureLimit": 5,
    }
    steps = [{"setWeight": 40}, {"approval": {}}]
    apply(kube, namespace, gated(setup.app, steps, [gate_spec], rollback={"duration": "2s"}))
    wait_until(
        "a passing throughput round at 40%, awaiting approval",
        lambda: setup.rollouts.status("shop"),
        lambda s: (
            s.get("phase") == "AwaitingApproval"
            and gate(s, "throughput").get("verdict") == "Pass"
            and gate(s, "throughput").get("consecutiveFailures") == 0
        ),
        120,
    )
    setup.sim.set("new", throughput=0.5)
    status = wait_until(
        "RolledBack",
        lambda: setup.rollouts.status("shop"),
        lambda s: s.get("phase") == "RolledBack",
        120,
    )
    # The history entry of the rollback carries the numbers of the gate that started it.
    (started,) = [h for h in status["history"] if h["event"] == "RollingBack"]
    assert started["gate"] == "throughput"
    # Per unit of share the new version served less than 90 % of legacy's rate (half,
    # once the rate window has only requests from after the change).
    assert 0.3 * started["legacyValue"] < started["value"] < 0.9 * started["legacyValue"]
    assert status["rollback"]["mode"] == "graceful"
    assert setup.rollouts.new_weight("shop") == 0
