"""After the plan reaches 100%, end to end: a bake whose failing gate rolls back, an abort
of a Succeeded Rollout on both routers (ready capacity sampled throughout), its refusal
once legacy is gone, and a Rollout held visibly by a dependency that rolled back."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.support import Rollouts, apply, deployment, launch_sim, shop_pair, wait_until
from tests.e2e.test_rollout_gates import error_rate, gated

pytestmark = pytest.mark.e2e


def gateway(name: str, steps: list[Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "legacy": {"deployment": "shop-v1"},
            "new": {"deployment": "shop-v2"},
            "traffic": {
                "gatewayAPI": {
                    "httpRoute": "shop",
                    "legacyBackend": "shop-v1",
                    "newBackend": "shop-v2",
                }
            },
            "steps": steps,
            **spec,
        },
    }


def replicas(name: str, app: str, steps: list[Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "legacy": {"deployment": f"{app}-v1"},
            "new": {"deployment": f"{app}-v2"},
            "traffic": {"replicas": {}},
            "steps": steps,
            **spec,
        },
    }


class Sampler:
    """Calls ``sample`` every 50 ms in a thread and keeps what it returns."""

    def __init__(self, sample: Callable[[], Any]) -> None:
        self.samples: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sample,), daemon=True)
        self._thread.start()

    def _run(self, sample: Callable[[], Any]) -> None:
        while not self._stop.is_set():
            self.samples.append(sample())
            time.sleep(0.05)

    def stop(self) -> list[Any]:
        self._stop.set()
        self._thread.join()
        return self.samples


def phase_is(rollouts: Rollouts, name: str, phase: str, timeout: float = 90) -> None:
    wait_until(phase, lambda: rollouts.phase(name), lambda p: p == phase, timeout)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


# -- bakeTime ----------------------------------------------------------------------------


@pytest.fixture
def simulated(kube: Any, namespace: str, crds: None, prometheus: Any) -> Iterator[Any]:
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
        yield rollouts, sim, app
    finally:
        prometheus.remove_scrape_target(job)
        sim.stop()


def test_gate_failing_during_the_bake_rolls_back(kube, namespace, simulated, operator):
    rollouts, sim, app = simulated
    steps = [{"setWeight": 50}, {"setWeight": 100}]
    apply(kube, namespace, gated(app, steps, [error_rate(app)], bakeTime="10m"))
    status = wait_until(
        "baking at 100% with a passing round",
        lambda: rollouts.status("shop"),
        lambda s: (
            s.get("phase") == "Progressing"
            and s.get("bakeUntil") is not None
            and rollouts.new_weight("shop") == 100
            and any(g.get("verdict") == "Pass" for g in s.get("gates", []))
        ),
        120,
    )
    assert status["message"].startswith("baking at 100% until "), status["message"]
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Progressing")["reason"] == "Baking"
    bake_until = status["bakeUntil"]
    time.sleep(3)
    assert rollouts.status("shop")["bakeUntil"] == bake_until  # set once, not moved
    sim.put({"new": {"errorRate": 0.3}})
    phase_is(rollouts, "shop", "RolledBack", 60)
    assert rollouts.route_weights("shop") == (100, 0)
    status = rollouts.status("shop")
    assert status["rollback"]["fromWeight"] == 100 and status["rollback"]["mode"] == "immediate"
    decided = [h for h in status["history"] if h.get("gate") == "errors"]
    assert decided and decided[0]["value"] > 0.05, status["history"]
    warnings = [(r, m) for t, r, m in rollouts.events("shop") if t == "Warning"]
    assert any(r == "RollingBack" and "gate errors" in m for r, m in warnings), warnings
    assert "Succeeded" not in [h["event"] for h in status["history"]]


# -- abort after success -----------------------------------------------------------------


def test_abort_after_success_on_the_gateway_router_waits_for_ready_legacy(
    kube, namespace, crds, operator
):
    rollouts = shop_pair(kube, namespace)
    apply(kube, namespace, gateway("shop", [{"setWeight": 50}, {"setWeight": 100}]))
    phase_is(rollouts, "shop", "Succeeded")
    assert rollouts.route_weights("shop") == (0, 100)
    # Legacy scaled to nothing after the release: an abort must not send traffic there.
    kube.kubectl("scale", "deployment/shop-v1", "--replicas=0", "-n", namespace)
    wait_until("legacy empty", lambda: rollouts.replicas("shop-v1"), lambda r: r == (0, 0))
    # Weight first, then legacy readiness: a weight below 100 seen here was written only
    # after legacy pods were ready.
    sampler = Sampler(lambda: (rollouts.new_weight("shop"), rollouts.replicas("shop-v1")[1]))
    rollouts.annotate("shop", {"segue.dev/abort": "errors after the release"})
    status = wait_until(
        "waiting for legacy capacity",
        lambda: rollouts.status("shop"),
        lambda s: condition(s, "Progressing").get("reason") == "WaitingForCapacity",
        60,
    )
    assert status["phase"] == "RollingBack"
    assert "waiting for ready pods of Deployment shop-v1" in status["message"]
    time.sleep(2)
    assert rollouts.new_weight("shop") == 100
    kube.kubectl("scale", "deployment/shop-v1", "--replicas=2", "-n", namespace)
    phase_is(rollouts, "shop", "RolledBack", 60)
    samples = sampler.stop()
    assert rollouts.route_weights("shop") == (100, 0)
    assert all(legacy > 0 for weight, legacy in samples if weight < 100), samples
    assert any(e == ("Normal", "Aborted") for e in [(t, r) for t, r, _ in rollouts.events("shop")])
    # Retry after such a rollback walks the plan again.
    rollouts.annotate("shop", {"segue.dev/retry": "fixed"})
    phase_is(rollouts, "shop", "Succeeded")
    assert rollouts.route_weights("shop") == (0, 100)


def test_abort_after_success_on_the_replicas_router_never_drops_capacity(
    kube, namespace, crds, operator
):
    apply(
        kube, namespace, deployment("search-v1", "search", 4), deployment("search-v2", "search", 0)
    )
    rollouts = Rollouts(kube.api_client, namespace)
    wait_until("legacy ready", lambda: rollouts.replicas("search-v1"), lambda r: r == (4, 4))
    apply(kube, namespace, replicas("search", "search", [{"setWeight": 50}, {"setWeight": 100}]))
    phase_is(rollouts, "search", "Succeeded", 120)
    assert rollouts.replicas("search-v1") == (0, 0) and rollouts.replicas("search-v2") == (4, 4)
    sampler = Sampler(
        lambda: (rollouts.replicas("search-v1")[1], rollouts.replicas("search-v2")[1])
    )
    rollouts.annotate("search", {"segue.dev/abort": "errors after the release"})
    phase_is(rollouts, "search", "RolledBack", 120)
    samples = sampler.stop()
    assert rollouts.replicas("search-v1") == (4, 4) and rollouts.replicas("search-v2")[0] == 0
    assert min(legacy + new for legacy, new in samples) >= 4, samples
    status = rollouts.status("search")
    assert status["rollback"]["fromWeight"] == 100
    # Retry: the plan runs again, again without losing capacity.
    sampler = Sampler(
        lambda: (rollouts.replicas("search-v1")[1], rollouts.replicas("search-v2")[1])
    )
    rollouts.annotate("search", {"segue.dev/retry": "fixed"})
    wait_until(
        "Succeeded again",
        lambda: rollouts.status("search"),
        lambda s: (
            s.get("phase") == "Succeeded"
            and any(h["event"] == "Retried" for h in s.get("history", []))
        ),
        120,
    )
    samples = sampler.stop()
    assert min(legacy + new for legacy, new in samples) >= 4, samples
    assert rollouts.replicas("search-v2") == (4, 4)


def test_abort_after_success_with_legacy_gone_is_refused(kube, namespace, crds, operator):
    rollouts = shop_pair(kube, namespace)
    apply(kube, namespace, gateway("shop", [{"setWeight": 100}]))
    phase_is(rollouts, "shop", "Succeeded")
    kube.kubectl("delete", "deployment/shop-v1", "-n", namespace)
    rollouts.annotate("shop", {"segue.dev/abort": "too late"})
    expected = (
        "segue.dev/abort='too late' ignored: the legacy Deployment shop-v1 no longer "
        "exists; nothing to roll back to"
    )
    events = wait_until(
        "AnnotationIgnored",
        lambda: rollouts.events("shop"),
        lambda ev: any(r == "AnnotationIgnored" for _, r, _ in ev),
        60,
    )
    assert ("Warning", "AnnotationIgnored", expected) in events, events
    assert not [e for e in events if e[1] == "MissingReference"], events
    status = rollouts.status("shop")
    assert status["phase"] == "Succeeded"
    # Deleting legacy after success is the cleanup, not a problem to report.
    assert condition(status, "Stalled")["status"] == "False"
    assert condition(status, "Ready")["status"] == "True"
    assert rollouts.route_weights("shop") == (0, 100)
    wait_until(
        "abort removed",
        lambda: rollouts.get("shop")["metadata"].get("annotations") or {},
        lambda a: "segue.dev/abort" not in a,
        30,
    )


# -- dependsOn on a rolled-back dependency ---------------------------------------------


def test_rolled_back_dependency_blocks_visibly_until_retried(kube, namespace, crds, operator):
    rollouts = shop_pair(kube, namespace)
    apply(kube, namespace, gateway("catalog", [{"setWeight": 50}, {"approval": {}}]))
    phase_is(rollouts, "catalog", "AwaitingApproval")
    rollouts.annotate("catalog", {"segue.dev/abort": "bad"})
    phase_is(rollouts, "catalog", "RolledBack")
    apply(kube, namespace, deployment("cart-v1", "cart", 2), deployment("cart-v2", "cart", 0))
    wait_until("cart ready", lambda: rollouts.replicas("cart-v1"), lambda r: r == (2, 2))
    apply(
        kube,
        namespace,
        replicas("cart", "cart", [{"setWeight": 100}], dependsOn=[{"name": "catalog"}]),
    )
    waited = kube.kubectl(
        "wait", "--for=condition=Stalled", "--timeout=60s", "rollout.segue.dev/cart",
        "-n", namespace,
    )  # fmt: skip
    assert "condition met" in waited.stdout
    status = rollouts.status("cart")
    stalled = condition(status, "Stalled")
    assert stalled["reason"] == "DependencyRolledBack"
    assert "Rollout catalog is RolledBack" in stalled["message"]
    assert condition(status, "Progressing")["status"] == "False"
    assert status["phase"] == "Waiting"
    time.sleep(3)  # later passes add no second Event
    warnings = [m for t, r, m in rollouts.events("cart") if r == "DependencyRolledBack"]
    assert len(warnings) == 1 and "Rollout catalog is RolledBack" in warnings[0], warnings
    assert rollouts.replicas("cart-v2")[0] == 0  # nothing moved
    # Retried and approved, the dependency succeeds; then cart starts and succeeds.
    rollouts.annotate("catalog", {"segue.dev/retry": "fixed"})
    phase_is(rollouts, "catalog", "AwaitingApproval")
    # cart's pass and catalog's run side by side: catalog may get there first.
    wait_until(
        "cart no longer stalled",
        lambda: condition(rollouts.status("cart"), "Stalled")["status"],
        lambda s: s == "False",
    )
    rollouts.annotate("catalog", {"segue.dev/approve": "1"})
    phase_is(rollouts, "catalog", "Succeeded")
    phase_is(rollouts, "cart", "Succeeded", 120)
    assert condition(rollouts.status("cart"), "Stalled")["status"] == "False"
