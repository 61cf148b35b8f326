"""Migrations end to end: the real operator moves Rollouts wave by wave on the real API
server, holds later waves visibly, and rolls back by scope (service, wave, migration),
writing the rollback log; a kill -9 in the middle of a wave-scope rollback resumes it
without repeating or skipping a member."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.support import (
    Rollouts,
    apply,
    deployment,
    httproute,
    launch_sim,
    start_operator,
    wait_until,
)

pytestmark = pytest.mark.e2e

GROUP, VERSION = "segue.dev", "v1alpha1"
WAVE_2 = {"migration": "shop", "wave": "2"}
HOLD = [{"setWeight": 50}, {"approval": {}}]  # stays AwaitingApproval at 50 %
QUICK = [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 100}]


def member(name: str, steps: list[Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": name, "labels": {"migration": "shop"}},
        "spec": {
            "legacy": {"deployment": f"{name}-v1", "version": "v1"},
            "new": {"deployment": f"{name}-v2", "version": "v2"},
            "traffic": {
                "gatewayAPI": {
                    "httpRoute": name,
                    "legacyBackend": f"{name}-v1",
                    "newBackend": f"{name}-v2",
                }
            },
            "steps": steps,
            **spec,
        },
    }


def migration(scope: str, waves: list[dict[str, Any]], name: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Migration",
        "metadata": {"name": name},
        "spec": {"rollbackScope": scope, "waves": waves},
    }


class Cluster:
    def __init__(self, kube: Any, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.rollouts = Rollouts(kube.api_client, namespace)
        self.objects = client.CustomObjectsApi(kube.api_client)

    def services(self, *names: str) -> None:
        docs: list[dict[str, Any]] = []
        for name in names:
            docs += [
                deployment(f"{name}-v1", name, 1),
                deployment(f"{name}-v2", name, 1),
                httproute(name, f"{name}-v1", f"{name}-v2"),
            ]
        apply(self.kube, self.namespace, *docs)
        for name in names:
            for d in (f"{name}-v1", f"{name}-v2"):
                wait_until(f"{d} ready", partial(self.rollouts.replicas, d), lambda r: r[1] == 1)

    def migration(self, name: str = "shop") -> dict[str, Any]:
        obj: Any = self.objects.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "migrations", name
        )
        return dict(obj.get("status") or {})

    def wait_migration(
        self, what: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        return wait_until(what, self.migration, ok, timeout)

    def phase_is(self, rollout: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return wait_until(
            f"{rollout} {phase}",
            lambda: self.rollouts.status(rollout),
            lambda s: s.get("phase") == phase,
            timeout,
        )

    def kubectl_wait(self, what: str, condition: str = "Stalled", timeout: int = 60) -> None:
        self.kube.kubectl(
            "wait", f"--for=condition={condition}", what, "-n", self.namespace,
            f"--timeout={timeout}s",
        )  # fmt: skip

    def migration_events(self, name: str = "shop") -> list[tuple[str, str, str]]:
        core = client.CoreV1Api(self.kube.api_client)
        items = core.list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind=Migration",
        ).items
        items.sort(key=lambda e: str(e.metadata.creation_timestamp))
        return [(e.type or "", e.reason or "", e.message or "") for e in items]


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def aborted(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for h in status.get("history", []) if h["event"] == "Aborted"]


@pytest.fixture
def c(kube: Any, namespace: str, crds: None) -> Cluster:
    return Cluster(kube, namespace)


def test_service_scope_holds_later_waves_visibly_until_the_member_is_retried(
    c: Cluster, operator: Any
) -> None:
    c.services("catalog", "cart")
    apply(
        c.kube, c.namespace,
        migration("service", [
            {"name": "low", "rollouts": ["catalog"]},
            {"name": "medium", "selector": {"matchLabels": {"migration": "shop", "wave": "2"}}},
        ]),
        member("catalog", HOLD),
        {**member("cart", QUICK), "metadata": {"name": "cart", "labels": WAVE_2}},
    )  # fmt: skip
    c.phase_is("catalog", "AwaitingApproval")
    waiting = c.phase_is("cart", "Waiting")
    assert "waiting for Migration shop to start wave 1 (medium)" in waiting["message"]
    assert condition(waiting, "Progressing")["reason"] == "WaitingForMigration"
    assert c.rollouts.new_weight("cart") == 0

    c.rollouts.annotate("catalog", {"segue.dev/abort": "errors in checkout"})
    c.phase_is("catalog", "RolledBack")
    c.kubectl_wait("migration/shop")
    c.kubectl_wait("rollout/cart")
    status = c.migration()
    assert status["phase"] == "Held"
    assert condition(status, "Stalled")["reason"] == "DependencyRolledBack"
    assert "catalog (RolledBack)" in status["message"]
    rb = status["rollbacks"][0]
    assert (rb["id"], rb["scope"], rb["members"]) == ("rb-1", "service", ["catalog"])
    assert rb["trigger"]["rollout"] == "catalog" and rb["trigger"]["reason"]
    wait_until("rb-1 Completed", c.migration, lambda s: s["rollbacks"][0]["outcome"] == "Completed")
    cart = c.rollouts.status("cart")
    assert cart["phase"] == "Waiting"
    assert condition(cart, "Stalled")["reason"] == "DependencyRolledBack"
    assert "Migration shop is Held" in condition(cart, "Stalled")["message"]
    warnings = [r for t, r, _ in c.rollouts.events("cart") if t == "Warning"]
    assert warnings.count("DependencyRolledBack") == 1
    reasons = [r for _, r, _ in c.migration_events()]
    assert {"WaveStarted", "RollbackStarted", "DependencyRolledBack", "RollbackCompleted"} <= set(
        reasons
    )

    # Retried and approved: the Migration goes on, and cart moves.
    c.rollouts.annotate("catalog", {"segue.dev/retry": "fixed"})
    c.phase_is("catalog", "AwaitingApproval")
    c.rollouts.annotate("catalog", {"segue.dev/approve": "1"})
    c.phase_is("cart", "Succeeded")
    c.kubectl_wait("migration/shop", "Ready")
    status = c.migration()
    assert status["phase"] == "Succeeded"
    assert [w["phase"] for w in status["waves"]] == ["Succeeded", "Succeeded"]
    assert len(status["rollbacks"]) == 1


def test_wave_scope_returns_every_member_of_the_wave_including_a_succeeded_one(
    c: Cluster, operator: Any
) -> None:
    c.services("catalog", "search", "cart")
    apply(
        c.kube, c.namespace,
        migration("wave", [
            {"name": "low", "rollouts": ["catalog", "search"]},
            {"name": "medium", "rollouts": ["cart"]},
        ]),
        member("catalog", QUICK),
        member("search", HOLD),
        member("cart", QUICK),
    )  # fmt: skip
    c.phase_is("catalog", "Succeeded")
    c.phase_is("search", "AwaitingApproval")
    assert c.rollouts.route_weights("catalog") == (0, 100)
    c.rollouts.annotate("search", {"segue.dev/abort": "latency in search"})
    status = c.wait_migration("RolledBack", lambda s: s.get("phase") == "RolledBack")
    rb = status["rollbacks"][0]
    assert (rb["scope"], rb["members"], rb["outcome"]) == (
        "wave",
        ["search", "catalog"],
        "Completed",
    )
    assert rb["completedAt"] >= rb["initiatedAt"]
    catalog = c.rollouts.status("catalog")
    assert catalog["phase"] == "RolledBack"
    assert c.rollouts.route_weights("catalog") == (100, 0)
    [entry] = aborted(catalog)
    assert "migration shop rollback rb-1 (wave scope)" in entry["reason"]
    assert [w["phase"] for w in status["waves"]] == ["RolledBack", "Pending"]
    # The later wave never starts: cart is Stalled, with no traffic on its new version.
    c.kubectl_wait("rollout/cart")
    assert c.rollouts.new_weight("cart") == 0
    c.kubectl_wait("migration/shop")
    reasons = [(t, r) for t, r, _ in c.migration_events()]
    assert ("Warning", "RollbackStarted") in reasons and ("Normal", "RollbackCompleted") in reasons


def test_migration_scope_rolls_back_latest_wave_first(c: Cluster, operator: Any) -> None:
    c.services("catalog", "cart", "payments", "ledger")
    apply(
        c.kube, c.namespace,
        migration("migration", [
            {"name": "low", "rollouts": ["catalog"]},
            {"name": "medium", "rollouts": ["cart", "ledger"]},
            {"name": "critical", "rollouts": ["payments"]},
        ]),
        member("catalog", QUICK),
        member("cart", HOLD),
        member("ledger", QUICK),
        member("payments", QUICK),
    )  # fmt: skip
    c.phase_is("catalog", "Succeeded")
    c.phase_is("ledger", "Succeeded")
    c.phase_is("cart", "AwaitingApproval")
    c.rollouts.annotate("cart", {"segue.dev/abort": "cart errors"})
    status = c.wait_migration("RolledBack", lambda s: s.get("phase") == "RolledBack", 90)
    rb = status["rollbacks"][0]
    assert (rb["scope"], rb["members"], rb["outcome"]) == (
        "migration",
        ["cart", "ledger", "catalog"],
        "Completed",
    )
    rolled = {n: c.rollouts.status(n) for n in ("cart", "ledger", "catalog")}
    assert all(s["phase"] == "RolledBack" for s in rolled.values())
    # Latest wave first: catalog's abort came after every member of wave 1 was RolledBack.
    done = [
        h["time"]
        for n in ("cart", "ledger")
        for h in rolled[n]["history"]
        if h["event"] == "RolledBack"
    ]
    [catalog_abort] = aborted(rolled["catalog"])
    assert catalog_abort["time"] >= max(done)
    assert c.rollouts.phase("payments") == "Waiting"
    assert [w["phase"] for w in status["waves"]] == ["RolledBack", "RolledBack", "Pending"]


def test_kill_9_in_a_wave_rollback_resumes_without_repeating_or_skipping(
    c: Cluster, kube: Any, namespace: str, prometheus: Any, tmp_path: Path
) -> None:
    names = [f"svc{i}" for i in range(6)]
    c.services(*names)
    graceful = {"rollback": {"mode": "graceful", "duration": "6s"}}
    op = start_operator(
        kube.kubeconfig, tmp_path / "op1.log", [namespace], prometheus=prometheus.url
    )
    try:
        apply(
            kube, namespace,
            migration("wave", [{"name": "all", "rollouts": names}]),
            *[member(n, HOLD, **graceful) for n in names],
        )  # fmt: skip
        for n in names:
            c.phase_is(n, "AwaitingApproval")
        c.rollouts.annotate(names[0], {"segue.dev/abort": "first member failed"})
        # Killed as soon as the rollback is in the Migration's log, while the aborts of the
        # other members are being written.
        deadline = time.monotonic() + 30
        while not c.migration().get("rollbacks"):
            assert time.monotonic() < deadline, "rb-1 never logged"
            time.sleep(0.005)
        op.proc.send_signal(signal.SIGKILL)
        op.proc.wait()
        reached = [n for n in names if _abort_reached(c, n)]
        print("members the abort reached before the kill:", reached)
    finally:
        op.stop()
    op = start_operator(
        kube.kubeconfig, tmp_path / "op2.log", [namespace], prometheus=prometheus.url
    )
    try:
        status = c.wait_migration("RolledBack", lambda s: s.get("phase") == "RolledBack", 90)
        [rb] = status["rollbacks"]
        assert rb["outcome"] == "Completed"
        assert sorted(rb["members"]) == sorted(names)
        for n in names:
            st = c.rollouts.status(n)
            assert st["phase"] == "RolledBack", n
            assert len(aborted(st)) == 1, (n, aborted(st))
            started = [h for h in st["history"] if h["event"] == "RollingBack"]
            assert len(started) == 1, (n, started)
            # Events follow the writes they describe: one lost with the killed process (the
            # member whose status was written just before the kill) is not posted again,
            # and none is posted twice. History, written with the status, has each once.
            events = [r for _, r, _ in c.rollouts.events(n)]
            assert events.count("Aborted") <= 1, (n, events)
            assert events.count("RollingBack") <= 1, (n, events)
        assert [r for _, r, _ in c.migration_events()].count("RollbackStarted") <= 1
    finally:
        op.stop()
        print(f"--- operator log ---\n{op.log()[-4000:]}")


def _abort_reached(c: Cluster, name: str) -> bool:
    obj = c.rollouts.get(name)
    annotations = obj["metadata"].get("annotations") or {}
    return "segue.dev/abort" in annotations or bool(aborted(obj.get("status") or {}))


def test_a_failing_gate_rolls_back_its_wave_and_the_log_keeps_its_numbers(
    c: Cluster, kube: Any, namespace: str, prometheus: Any, operator: Any
) -> None:
    c.services("shop", "catalog", "cart")
    app = f"shop-{uuid.uuid4().hex[:6]}"
    sim = launch_sim(
        kube.kubeconfig, app, "--httproute", f"{namespace}/shop",
        "--legacy-backend", "shop-v1", "--new-backend", "shop-v2",
    )  # fmt: skip
    job = f"sim-{app}"
    prometheus.add_scrape_target(job, sim.host_port)
    try:
        labels = {"app": app, "window": "5s"}
        errors = {"name": "errors", "template": "error-rate", "labels": labels}
        gated = member("shop", HOLD, analysis={"interval": "2s", "gates": [errors]})
        apply(
            kube, namespace,
            migration("wave", [
                {"name": "low", "rollouts": ["catalog", "shop"]},
                {"name": "medium", "rollouts": ["cart"]},
            ]),
            member("catalog", QUICK), gated, member("cart", QUICK),
        )  # fmt: skip
        c.phase_is("catalog", "Succeeded")
        wait_until(
            "a passing round at 50 %",
            lambda: c.rollouts.status("shop"),
            lambda s: (
                s.get("phase") == "AwaitingApproval"
                and any(g.get("verdict") == "Pass" for g in s.get("gates", []))
            ),
            90,
        )
        sim.put({"new": {"errorRate": 0.3}})
        status = c.wait_migration("RolledBack", lambda s: s.get("phase") == "RolledBack", 90)
    finally:
        prometheus.remove_scrape_target(job)
        sim.stop()
    rb = status["rollbacks"][0]
    trigger = rb["trigger"]
    assert (trigger["rollout"], trigger["gate"], trigger["bound"]) == ("shop", "errors", "<= 0.05")
    assert trigger["value"] > 0.05 and trigger["actor"] == "gate errors"
    assert (rb["members"], rb["outcome"]) == (["shop", "catalog"], "Completed")
    assert c.rollouts.phase("catalog") == "RolledBack"
    assert c.rollouts.route_weights("catalog") == (100, 0)
    started = [m for t, r, m in c.migration_events() if r == "RollbackStarted"]
    assert len(started) == 1 and "shop: gate errors" in started[0], started


def test_a_member_without_legacy_fails_the_rollback_with_the_reason(
    c: Cluster, operator: Any
) -> None:
    c.services("catalog", "search")
    apply(
        c.kube, c.namespace,
        migration("wave", [{"name": "low", "rollouts": ["catalog", "search"]}]),
        member("catalog", QUICK),
        member("search", HOLD),
    )  # fmt: skip
    c.phase_is("catalog", "Succeeded")
    c.phase_is("search", "AwaitingApproval")
    c.kube.kubectl("delete", "deployment/catalog-v1", "-n", c.namespace)
    c.rollouts.annotate("search", {"segue.dev/abort": "search errors"})
    status = c.wait_migration("Failed", lambda s: s.get("phase") == "Failed")
    rb = status["rollbacks"][0]
    assert rb["outcome"] == "Failed" and rb["completedAt"]
    assert "catalog refused the abort" in rb["message"]
    assert "the legacy Deployment catalog-v1 no longer exists" in rb["message"]
    assert c.rollouts.phase("catalog") == "Succeeded"
    c.phase_is("search", "RolledBack")
    failed = [(t, m) for t, r, m in c.migration_events() if r == "RollbackFailed"]
    assert len(failed) == 1 and failed[0][0] == "Warning", failed
    c.kubectl_wait("migration/shop")
