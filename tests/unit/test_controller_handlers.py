"""The informers' events reach the store at once, and the supervisors only once every kind
is listed: no Rollout is judged against an object that merely has not been listed yet, and
no Migration member moves before its Migration is known."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from segue import GROUP, VERSION
from segue.controller.handlers import (
    MIGRATIONS,
    PROVIDERS,
    ROLLOUTS,
    Operator,
    all_listed,
    deliverer,
    watched_kinds,
)
from segue.controller.metrics import OperatorMetrics
from segue.controller.store import Store
from segue.controller.workers import Supervisor, needs_work


def rollout(name: str, rv: int = 1, phase: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {
            "namespace": "ns",
            "name": name,
            "generation": 1,
            "resourceVersion": str(rv),
        },
        "status": {"phase": phase} if phase else {},
    }


def deployment(name: str, ready: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "generation": 1, "resourceVersion": "5"},
        "spec": {"replicas": 2, "template": {}},
        "status": {"readyReplicas": ready, "updatedReplicas": ready},
    }


class Targets:
    def __init__(self) -> None:
        self.forgotten: list[tuple[str, str]] = []

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))


async def never_done(worker: Any) -> float | None:
    """A pass that lasts until its worker is stopped: only which workers exist matters."""
    await asyncio.Event().wait()
    return None


def operator() -> tuple[Operator, Supervisor, Supervisor, Targets]:
    rollouts = Supervisor(never_done, has_work=needs_work)
    migrations = Supervisor(never_done, has_work=needs_work, kind="Migration")
    targets = Targets()
    none = cast(Any, None)
    op = Operator(
        kube=none,
        store=Store(),
        supervisor=rollouts,
        reconciler=none,
        metrics=OperatorMetrics(),
        dispatcher=none,
        targets=cast(Any, targets),
        events=none,
        migrations=migrations,
    )
    return op, rollouts, migrations, targets


def test_until_every_kind_is_listed_the_store_fills_and_no_worker_starts() -> None:
    async def scenario() -> None:
        op, rollouts, migrations, targets = operator()
        to_rollouts = deliverer(op, ROLLOUTS.kind)
        to_migrations = deliverer(op, MIGRATIONS.kind)
        to_deployments = deliverer(op, "Deployment")
        to_rollouts(None, rollout("a"))
        to_rollouts(None, rollout("gone"))
        to_rollouts("MODIFIED", rollout("a", rv=2, phase="Progressing"))
        to_rollouts("DELETED", {"metadata": {"namespace": "ns", "name": "gone"}})
        to_migrations(None, {"metadata": {"namespace": "ns", "name": "wave", "generation": 1}})
        to_deployments(None, deployment("web", ready=1))
        # Everything is in the store already.
        assert op.store.rollout_phase("ns", "a") == (True, "Progressing")
        assert op.store.rollout_phase("ns", "gone") == (False, None)
        assert ("ns", "wave") in op.store.migrations
        assert op.store.deployment("ns", "web") is not None
        # No worker yet, and one event kept per object: the latest.
        assert not rollouts.workers and not migrations.workers
        assert list(op.deferred) == [("Rollout", "ns", "a"), ("Migration", "ns", "wave")]
        assert op.deferred[("Rollout", "ns", "a")][1]["metadata"]["resourceVersion"] == "2"

        all_listed(op)
        assert set(rollouts.workers) == {("ns", "a")}
        assert rollouts.workers[("ns", "a")].obj["metadata"]["resourceVersion"] == "2"
        assert set(migrations.workers) == {("ns", "wave")}
        assert not op.deferred
        all_listed(op)  # once only
        assert len(rollouts.workers) == 1

        # From now on each event goes straight through.
        to_rollouts("ADDED", rollout("b"))
        assert ("ns", "b") in rollouts.workers
        to_rollouts("DELETED", rollout("b"))
        assert ("ns", "b") not in rollouts.workers
        assert op.store.rollout_phase("ns", "b") == (False, None)
        assert targets.forgotten == [("ns", "b")]
        await rollouts.stop()
        await migrations.stop()

    asyncio.run(scenario())


def test_a_referenced_object_wakes_its_readers_only_when_its_summary_changes() -> None:
    async def scenario() -> None:
        op, rollouts, migrations, _ = operator()
        all_listed(op)
        deliverer(op, ROLLOUTS.kind)("ADDED", rollout("a"))
        worker = rollouts.workers[("ns", "a")]
        rollouts.watch(worker, [("Deployment", "ns", "web")])
        to_deployments = deliverer(op, "Deployment")
        to_deployments("ADDED", deployment("web", ready=1))
        assert worker.wake.is_set()
        worker.wake.clear()
        to_deployments("MODIFIED", deployment("web", ready=1))  # nothing Segue reads
        assert not worker.wake.is_set()
        to_deployments("DELETED", deployment("web", ready=1))
        assert worker.wake.is_set()
        assert op.store.deployment("ns", "web") is None
        await rollouts.stop()
        await migrations.stop()

    asyncio.run(scenario())


def test_every_kind_read_is_watched_and_metric_providers_cluster_wide() -> None:
    kinds = {w.kind: w for w in watched_kinds(["gatewayAPI", "replicas"], {})}
    assert {"Rollout", "Migration", "MetricProvider", "Deployment", "HTTPRoute"} <= set(kinds)
    assert kinds["MetricProvider"] == PROVIDERS and PROVIDERS.cluster
    assert not kinds["Rollout"].cluster and not kinds["Deployment"].cluster
    unusable = {w.kind for w in watched_kinds(["gatewayAPI"], {"gatewayAPI": "no CRDs"})}
    assert "HTTPRoute" not in unusable
