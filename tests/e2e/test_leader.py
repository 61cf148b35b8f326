"""One active operator: real operator processes electing a leader through a Lease on the real
API server (segue.controller.leader).

Each test runs its operators on its own namespace, so the Lease (named segue-operator) is in
that namespace, the first one they watch.
"""

from __future__ import annotations

import itertools
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from segue_testkit.scenario import rollout
from tests.e2e.conftest import Kube, Prometheus
from tests.e2e.support import Operator, apply, launch_sim, shop_pair, start_operator, wait_until

pytestmark = pytest.mark.e2e

LEASE = "segue-operator"
# Lease duration (10 s) after the standby last saw a renewal, which it sees at most one
# retry period (2 s) late, plus one request: the design's bound is 15 s.
FAILOVER_BOUND = 15.0


def identity(op: Operator) -> str:
    return f"{socket.gethostname()}-{op.proc.pid}"


def lines(op: Operator, text: str) -> list[str]:
    return [line for line in op.log().splitlines() if text in line]


def read_lease(kube: Kube, namespace: str) -> dict[str, Any]:
    obj: Any = client.CustomObjectsApi(kube.api_client).get_namespaced_custom_object(
        "coordination.k8s.io", "v1", namespace, "leases", LEASE
    )
    return dict(obj)


def holder(kube: Kube, namespace: str) -> str | None:
    spec = read_lease(kube, namespace).get("spec") or {}
    return spec.get("holderIdentity")


def seconds_until_leader(op: Operator, since: float, timeout: float) -> float:
    """Seconds from ``since`` (monotonic) until ``op`` logs that it became the leader."""

    def took() -> float | None:
        return time.monotonic() - since if lines(op, "became leader") else None

    found = wait_until(f"{op.log_path.name} to lead", took, lambda t: t is not None, timeout)
    assert found is not None
    return found


def exited(op: Operator) -> int | None:
    return op.proc.poll()


@pytest.fixture
def operators(tmp_path: Path) -> Iterator[list[Operator]]:
    """Operators a test starts; stopped (SIGTERM) and their logs printed afterwards."""
    started: list[Operator] = []
    yield started
    for op in started:
        op.stop()
    for op in started:
        print(f"--- operator log ({op.log_path}, exit {op.proc.returncode}) ---")
        print(op.log()[-6000:])


def leader_and_standby(
    kube: Kube,
    namespace: str,
    tmp_path: Path,
    operators: list[Operator],
    prometheus: str | None = None,
) -> tuple[Operator, Operator]:
    """Two operators on one namespace: the first started leads, the second stands by."""
    first = start_operator(kube.kubeconfig, tmp_path / "op1.log", [namespace], prometheus)
    operators.append(first)
    wait_until("the first operator to lead", lambda: lines(first, "became leader"), bool, 30)
    second = start_operator(kube.kubeconfig, tmp_path / "op2.log", [namespace], prometheus)
    operators.append(second)
    wait_until("the second operator to stand by", lambda: lines(second, "standing by"), bool, 30)
    return first, second


def test_two_operators_one_leads_the_other_stands_by_until_the_leader_is_killed(
    kube: Kube, namespace: str, crds: None, tmp_path: Path, operators: list[Operator]
) -> None:
    first, second = leader_and_standby(kube, namespace, tmp_path, operators)
    led = lines(first, "became leader")
    assert len(led) == 1, led
    assert (
        f"became leader: Lease {namespace}/{LEASE} is held by {identity(first)} (created it)"
        in (led[0])
    )
    assert holder(kube, namespace) == identity(first)

    # The standby says so once, naming the holder, and goes on standing by quietly while the
    # leader renews: six renewals, past a whole lease duration (10 s).
    renewals: set[str] = set()

    def renewed() -> int:
        renewals.add(str((read_lease(kube, namespace).get("spec") or {}).get("renewTime")))
        return len(renewals)

    wait_until("six renewals of the Lease", renewed, lambda n: n >= 6, 30)
    standing = lines(second, "standing by")
    assert len(standing) == 1, standing
    assert f"standing by: Lease {namespace}/{LEASE} is held by {identity(first)}" in standing[0]
    assert "renewed" in standing[0]
    assert not lines(second, "became leader")
    assert not lines(first, "standing by") and not lines(first, "lost leadership")
    assert holder(kube, namespace) == identity(first)
    assert exited(first) is None and exited(second) is None

    # The leader dies without a word: the standby takes over within the bound.
    killed = time.monotonic()
    first.stop(signal.SIGKILL)
    took = seconds_until_leader(second, killed, FAILOVER_BOUND + 5)
    assert took <= FAILOVER_BOUND, f"took over after {took:.1f}s"
    assert (
        f"is held by {identity(second)} ({identity(first)} stopped renewing it)"
        in (lines(second, "became leader")[0])
    )
    assert holder(kube, namespace) == identity(second)

    # The new leader runs the operator: a Rollout goes all the way.
    rollouts = shop_pair(kube, namespace, replicas=1)
    apply(kube, namespace, rollout("shop", steps=[{"setWeight": 50}, {"setWeight": 100}]))
    wait_until("Succeeded", lambda: rollouts.phase("shop"), lambda p: p == "Succeeded", 60)
    assert exited(second) is None


def test_a_leader_shutting_down_releases_the_lease_and_the_standby_takes_over_at_once(
    kube: Kube, namespace: str, crds: None, tmp_path: Path, operators: list[Operator]
) -> None:
    first, second = leader_and_standby(kube, namespace, tmp_path, operators)
    stopped = time.monotonic()
    first.stop()  # SIGTERM, as the kubelet does
    assert first.proc.returncode == 0, first.log()[-3000:]
    assert lines(first, f"released Lease {namespace}/{LEASE}")
    took = seconds_until_leader(second, stopped, FAILOVER_BOUND)
    # No wait for expiry: kopf stops (well under a second with nothing to do), the Lease is
    # released, and the standby's next look (every 2 s) finds it free.
    assert took < 6, f"took over {took:.1f}s after SIGTERM"
    assert "(it was free)" in lines(second, "became leader")[0]


def test_a_leader_that_loses_the_lease_stops_and_exits_non_zero(
    kube: Kube, namespace: str, crds: None, tmp_path: Path, operators: list[Operator]
) -> None:
    op = start_operator(kube.kubeconfig, tmp_path / "op.log", [namespace])
    operators.append(op)
    wait_until("the operator to lead", lambda: lines(op, "became leader"), bool, 30)

    # Another candidate takes the Lease (a replace guarded by resourceVersion, as a standby
    # would; the operator's next renewal then meets a 409).
    lease = read_lease(kube, namespace)
    lease["spec"]["holderIdentity"] = "intruder-1"
    client.CustomObjectsApi(kube.api_client).replace_namespaced_custom_object(
        "coordination.k8s.io", "v1", namespace, "leases", LEASE, lease
    )

    code = wait_until("the operator to exit", lambda: exited(op), lambda c: c is not None, 15)
    assert code == 1, op.log()[-3000:]
    lost = lines(op, "lost leadership")
    assert len(lost) == 1, lost
    assert f"Lease {namespace}/{LEASE} is now held by intruder-1" in lost[0]
    # It did not give the Lease back to itself on the way out.
    assert holder(kube, namespace) == "intruder-1"


def _time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_two_operators_count_each_failing_round_once(
    kube: Kube,
    namespace: str,
    crds: None,
    prometheus: Prometheus,
    tmp_path: Path,
    operators: list[Operator],
) -> None:
    """A gate failing from the start, with a leader and a standby: only the leader runs
    rounds, so each failing round counts once and the Rollout rolls back after exactly
    failureLimit rounds, an interval apart."""
    limit, interval = 3, 2.0
    first, second = leader_and_standby(kube, namespace, tmp_path, operators, prometheus.url)
    rollouts = shop_pair(kube, namespace, replicas=1)
    # The traffic simulator follows the route's weights; Prometheus scrapes it every second.
    app = f"shop-{uuid.uuid4().hex[:6]}"
    sim = launch_sim(
        kube.kubeconfig, app, "--httproute", f"{namespace}/shop",
        "--legacy-backend", "shop-v1", "--new-backend", "shop-v2",
    )  # fmt: skip
    job = f"sim-{app}"
    prometheus.add_scrape_target(job, sim.host_port)
    try:
        sim.put({"new": {"errorRate": 0.2}})  # above the error-rate bound (0.05) from the start
        gate = {
            "name": "errors",
            "template": "error-rate",
            "labels": {"app": app, "window": "5s"},
            "failureLimit": limit,
            "onFailure": "rollback",
        }
        steps = [{"setWeight": 20}, {"approval": {}}]
        analysis = {"interval": f"{interval:g}s", "gates": [gate]}
        apply(kube, namespace, rollout("shop", steps=steps, analysis=analysis))

        # Every counted round, by its evaluation time, as status showed it.
        rounds: dict[str, dict[str, Any]] = {}

        def phase() -> str | None:
            status = rollouts.status("shop")
            for g in status.get("gates", []):
                if g.get("lastEvaluated"):
                    rounds.setdefault(g["lastEvaluated"], g)
            return status.get("phase")

        wait_until("RolledBack", phase, lambda p: p == "RolledBack", 120)
        status = rollouts.status("shop")
    finally:
        prometheus.remove_scrape_target(job)
        sim.stop()

    errors = next(g for g in status["gates"] if g["name"] == "errors")
    assert errors["verdict"] == "Fail", errors
    assert errors["consecutiveFailures"] == errors["failureLimit"] == limit, errors
    rolling_back = [h for h in status["history"] if h["event"] == "RollingBack"]
    assert len(rolling_back) == 1, status["history"]
    assert rolling_back[0].get("gate") == "errors", rolling_back
    assert f"failed {limit}/{limit}" in rolling_back[0]["reason"], rolling_back

    failing = sorted(
        ((t, g) for t, g in rounds.items() if g["verdict"] == "Fail"), key=lambda r: _time(r[0])
    )
    assert [g["consecutiveFailures"] for _, g in failing] == list(range(1, limit + 1)), failing
    times = [_time(t) for t, _ in failing]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    took = _time(rolling_back[0]["time"]) - times[0]
    print(
        f"failing rounds {' '.join(t for t, _ in failing)}; gaps "
        f"{' '.join(f'{g:.2f}s' for g in gaps)}; first failing round to RollingBack {took:.2f}s"
    )
    # One process runs rounds: one every interval, never two close together.
    assert all(g >= 0.75 * interval for g in gaps), gaps
    assert took >= (limit - 1) * interval, f"rolled back {took:.2f}s after the first failure"

    assert len(lines(first, "became leader")) == 1
    assert not lines(second, "became leader")
    assert len(lines(second, "standing by")) == 1
    assert exited(first) is None and exited(second) is None
