"""An abort, or a vanished new version, pulls traffic back within seconds whatever else is
going on: a hanging Prometheus used by another Rollout, a deleted Deployment, lost legacy
capacity, huge annotations. Bad durations are refused before anything runs.

Bounds here are generous (a shared, noisy machine): the figures themselves come from
`make bench` (hack/bench_abort.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from segue_testkit.scenario import hanging_server, rollout
from tests.e2e.support import (
    Rollouts,
    apply,
    deployment,
    httproute,
    shop_pair,
    start_operator,
    wait_until,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# Before the watch-driven shell, these took 23 s to 179 s (hanging Prometheus) or never
# happened at all (deleted Deployment, huge annotations).
PROMPT_S = 5.0


def pair(kube: Any, namespace: str, app: str, replicas: int = 1) -> None:
    apply(
        kube,
        namespace,
        deployment(f"{app}-v1", app, replicas),
        deployment(f"{app}-v2", app, replicas),
        httproute(app, f"{app}-v1", f"{app}-v2"),
    )


def time_to_zero(rollouts: Rollouts, route: str, timeout: float = 60) -> float:
    start = time.monotonic()
    wait_until(f"{route} at 0%", lambda: rollouts.new_weight(route), lambda w: w == 0, timeout)
    took = time.monotonic() - start
    print(f"{route}: 0% after {took:.2f}s")
    return took


@pytest.fixture
def hanging_prometheus() -> Iterator[tuple[str, Callable[[], int]]]:
    """A loopback server that accepts connections and never answers, and a count of the
    connections it holds."""
    with hanging_server() as served:
        yield served


def test_abort_is_not_held_up_by_another_rollouts_hanging_prometheus(
    kube, namespace, crds, prometheus, hanging_prometheus, tmp_path
):
    address, held = hanging_prometheus
    # The hanging server is an inline address: this operator allows it.
    operator = start_operator(
        kube.kubeconfig,
        tmp_path / "operator.log",
        [namespace],
        prometheus=prometheus.url,
        extra_args=["--allow-prometheus-address", address],
    )
    try:
        _abort_beside_a_hanging_prometheus(kube, namespace, address, held)
    finally:
        operator.stop()
        print(f"--- operator log ---\n{operator.log()[-6000:]}")


def _abort_beside_a_hanging_prometheus(
    kube: Any, namespace: str, address: str, held: Callable[[], int]
) -> None:
    rollouts = Rollouts(kube.api_client, namespace)
    pair(kube, namespace, "a")
    pair(kube, namespace, "b")
    gates = [{"name": f"g{i}", "query": f"up{{g='{i}'}}", "max": 1} for i in range(16)]
    analysis = {
        "interval": "1s",
        "prometheus": {"address": address, "timeout": "30s"},
        "gates": gates,
    }
    plan = [{"setWeight": 10}, {"approval": {}}]
    apply(kube, namespace, rollout("a", steps=plan, analysis=analysis))
    apply(kube, namespace, rollout("b", steps=[{"setWeight": 30}, {"approval": {}}]))
    wait_until("a at 10%", lambda: rollouts.new_weight("a"), lambda w: w == 10, 90)
    wait_until("b waiting", lambda: rollouts.phase("b"), lambda p: p == "AwaitingApproval", 90)
    # a's query pool is saturated: every one of its workers is stuck on the hanging server.
    wait_until("a's queries stuck", held, lambda n: n >= 4, 60)
    rollouts.annotate("b", {"segue.dev/abort": "pull it back"})
    took = time_to_zero(rollouts, "b")
    assert took < PROMPT_S, f"b reached 0% after {took:.1f}s"
    wait_until("b RolledBack", lambda: rollouts.phase("b"), lambda p: p == "RolledBack", 30)
    # a is still held by its analysis, never promoted, and says why.
    assert rollouts.new_weight("a") == 10


def test_a_deleted_new_deployment_sends_all_traffic_back_and_an_abort_is_still_handled(
    kube, namespace, crds, operator
):
    rollouts = shop_pair(kube, namespace)
    apply(kube, namespace, rollout("shop", steps=[{"setWeight": 30}, {"approval": {}}]))
    wait_until("at 30%", lambda: rollouts.new_weight("shop"), lambda w: w == 30, 90)
    kube.kubectl("delete", "-n", namespace, "deployment/shop-v2", "--wait=false")
    took = time_to_zero(rollouts, "shop")
    assert took < PROMPT_S, f"the route reached 0% after {took:.1f}s"
    wait_until("RolledBack", lambda: rollouts.phase("shop"), lambda p: p == "RolledBack", 30)
    status = rollouts.status("shop")
    assert "shop-v2" in status["message"]
    warnings = [m for t, _, m in rollouts.events("shop") if t == "Warning"]
    assert any("shop-v2" in m for m in warnings), warnings
    # A person's abort after that is acknowledged, not left hanging.
    rollouts.annotate("shop", {"segue.dev/abort": "the new version is gone"})
    wait_until(
        "the abort to be handled",
        lambda: rollouts.get("shop")["metadata"].get("annotations") or {},
        lambda a: "segue.dev/abort" not in a,
        30,
    )
    assert rollouts.route_weights("shop") == (100, 0)


def test_lost_legacy_capacity_is_reported_and_delete_still_completes(
    kube, namespace, crds, operator
):
    rollouts = shop_pair(kube, namespace)
    apply(kube, namespace, rollout("shop", steps=[{"setWeight": 30}, {"approval": {}}]))
    wait_until("at 30%", lambda: rollouts.new_weight("shop"), lambda w: w == 30, 90)
    kube.kubectl("scale", "-n", namespace, "deployment/shop-v1", "--replicas=0")
    degraded = wait_until(
        "a Degraded condition",
        lambda: {c["type"]: c for c in rollouts.status("shop").get("conditions", [])},
        lambda c: c.get("Degraded", {}).get("status") == "True",
        30,
    )
    assert "shop-v1" in degraded["Degraded"]["message"]
    assert any(t == "Warning" and "shop-v1" in m for t, _, m in rollouts.events("shop")), (
        rollouts.events("shop")
    )
    # Deleting it cannot move traffic onto a legacy with no pods; the finalizer is released
    # anyway, within a minute, with a Warning that says what was left.
    start = time.monotonic()
    kube.kubectl("delete", "-n", namespace, "rollout.segue.dev/shop", "--timeout=120s")
    took = time.monotonic() - start
    assert took < 75, f"delete took {took:.0f}s"
    assert rollouts.new_weight("shop") == 30
    events = rollouts.events("shop")
    assert any(t == "Warning" and "could not be returned" in m for t, _, m in events), events


def test_huge_annotations_never_freeze_a_rollout(kube, namespace, crds, operator):
    rollouts = shop_pair(kube, namespace)
    apply(kube, namespace, rollout("shop", steps=[{"setWeight": 10}, {"approval": {}}]))
    wait_until("at 10%", lambda: rollouts.new_weight("shop"), lambda w: w == 10, 90)
    for i in range(10):
        junk = f"{i}" + "x" * (200 * 1024)
        rollouts.annotate("shop", {"segue.dev/approve": junk})
        wait_until(
            f"junk approval {i} handled",
            lambda: rollouts.get("shop")["metadata"].get("annotations") or {},
            lambda a: "segue.dev/approve" not in a,
            30,
        )
    status = rollouts.status("shop")
    assert len(json.dumps(status).encode()) < 64 * 1024
    assert status["phase"] == "AwaitingApproval"
    rollouts.annotate("shop", {"segue.dev/abort": "y" * (200 * 1024)})
    took = time_to_zero(rollouts, "shop")
    assert took < PROMPT_S, f"the route reached 0% after {took:.1f}s"
    wait_until("RolledBack", lambda: rollouts.phase("shop"), lambda p: p == "RolledBack", 30)
    assert len(json.dumps(rollouts.status("shop")).encode()) < 64 * 1024
    assert all(len(m.encode()) <= 1024 for _, _, m in rollouts.events("shop"))


GATES = [{"name": "e", "template": "error-rate"}]
BAD_DURATIONS = [
    ("spec.hold", {"risk": "low", "hold": "99999999999h"}),
    (
        "spec.steps[1].pause.duration",
        {"steps": [{"setWeight": 5}, {"pause": {"duration": "99999999999h"}}]},
    ),
    ("spec.analysis.interval", {"risk": "low", "analysis": {"interval": "0s", "gates": GATES}}),
    (
        "spec.analysis.prometheus.timeout",
        {"risk": "low", "analysis": {"prometheus": {"timeout": "0s"}, "gates": GATES}},
    ),
]


@pytest.mark.parametrize(("field", "spec"), BAD_DURATIONS, ids=[f for f, _ in BAD_DURATIONS])
def test_bad_durations_are_refused_with_the_field_named(
    kube, namespace, crds, tmp_path, field, spec
):
    manifest = rollout("shop", **spec)
    result = kube.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    # The same file, offline: a field-named error, never a traceback.
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(manifest))
    lint = subprocess.run(
        [sys.executable, "-m", "segue.cli.main", "lint", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert lint.returncode == 1, lint.stdout + lint.stderr
    assert "Traceback" not in lint.stdout + lint.stderr
    assert field in lint.stdout + lint.stderr
