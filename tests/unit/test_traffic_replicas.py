"""The replicas router against a simulated Deployment controller: which writes it sends
for each weight, and when it reads a weight back as confirmed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kubernetes import client

from segue.controller.store import Store
from segue.traffic.replicas.router import BASELINE, ReplicasRouter

T = TypeVar("T")
Write = tuple[str, dict[str, Any]]


class Answer:
    """The API server's answer to a write, as the client returns it unread."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def read(self) -> bytes:
        return json.dumps(self.body).encode()

    def release_conn(self) -> None:
        pass


class Calls:
    async def call(self, fn: Callable[[Any], T]) -> T:
        return fn(None)


class Cluster:
    """Two Deployments whose pods become ready when ``settle`` is called. Each change is
    a watch event, delivered at once unless ``lagging`` (then by ``deliver``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, legacy: int) -> None:
        self.store = Store()
        self.writes: list[Write] = []
        self.version = 1
        self.bodies = {"app-v1": self._body("app-v1", legacy), "app-v2": self._body("app-v2", 0)}
        self.lagging = False
        self.events: list[dict[str, Any]] = []
        for body in self.bodies.values():
            self.store.put("Deployment", body)
        cluster = self

        def patch(self: Any, name: str, namespace: str, body: Any, **_: Any) -> Answer:
            return Answer(cluster.apply(name, body))

        def patch_scale(self: Any, name: str, namespace: str, body: Any, **_: Any) -> Answer:
            deployment = cluster.apply(name, body)
            meta = deployment["metadata"]
            return Answer({
                "kind": "Scale",
                "metadata": {"namespace": meta["namespace"], "name": meta["name"],
                             "resourceVersion": meta["resourceVersion"]},
                "spec": {"replicas": deployment["spec"]["replicas"]},
            })  # fmt: skip

        monkeypatch.setattr(client.AppsV1Api, "patch_namespaced_deployment", patch)
        monkeypatch.setattr(client.AppsV1Api, "patch_namespaced_deployment_scale", patch_scale)
        self.recorded: int | None = None  # the Rollout's status.targetWeight

    def router(self) -> ReplicasRouter:
        """As each pass builds it: with the weight the status records as asked."""
        return ReplicasRouter(self.store, Calls(), "ns", "app-v1", "app-v2", asked=self.recorded)

    def _body(self, name: str, replicas: int) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "ns", "name": name, "generation": 1, "annotations": {},
                         "resourceVersion": str(self.version)},
            "spec": {"replicas": replicas, "template": {"spec": {}}},
            "status": {"readyReplicas": replicas, "updatedReplicas": replicas,
                       "replicas": replicas, "observedGeneration": 1},
        }  # fmt: skip

    def apply(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """The write, its watch event; returns the Deployment as written."""
        self.writes.append((name, json.loads(json.dumps(patch))))
        body = self.bodies[name]
        body["metadata"]["annotations"].update((patch.get("metadata") or {}).get("annotations", {}))
        if "replicas" in (patch.get("spec") or {}):
            body["spec"]["replicas"] = patch["spec"]["replicas"]
            body["metadata"]["generation"] += 1
        return self.changed(body)

    def changed(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        event: dict[str, Any] = json.loads(json.dumps(body))
        self.events.append(event)
        if not self.lagging:
            self.deliver()
        return event

    def deliver(self) -> None:
        """The watch events so far, in order."""
        for event in self.events:
            self.store.put("Deployment", event)
        self.events.clear()

    def settle(self) -> None:
        for body in self.bodies.values():
            n = body["spec"]["replicas"]
            body["status"].update(readyReplicas=n, updatedReplicas=n, replicas=n,
                                  observedGeneration=body["metadata"]["generation"])  # fmt: skip
            self.changed(body)

    def move_to(self, weight: int) -> int:
        """Ask for ``weight`` until the router reads it back; returns the passes needed."""
        for passes in range(1, 10):
            router = self.router()
            asyncio.run(router.set_weight(weight))
            self.recorded = weight
            self.settle()
            if self.router().read_weight() == weight:
                return passes
        raise AssertionError(f"{weight}% never confirmed")


def test_a_plan_costs_two_writes_per_weight_and_records_the_baseline_on_the_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(monkeypatch, legacy=4)
    for weight in (25, 50, 75, 100):
        cluster.move_to(weight)
    assert [name for name, _ in cluster.writes] == ["app-v2", "app-v1"] * 4
    # Only replicas are written on the new side: an annotation change there would cost
    # the Deployment controller a ReplicaSet write of its own.
    assert all(patch == {"spec": {"replicas": patch["spec"]["replicas"]}}
               for name, patch in cluster.writes if name == "app-v2")  # fmt: skip
    # The legacy side's first scaling records the baseline in the same request, and only
    # that one does.
    legacy = [patch for name, patch in cluster.writes if name == "app-v1"]
    assert legacy[0] == {"metadata": {"annotations": {BASELINE: "4"}}, "spec": {"replicas": 3}}
    assert all("metadata" not in patch for patch in legacy[1:])
    assert [body["spec"]["replicas"] for body in cluster.bodies.values()] == [0, 4]


def test_a_weight_that_leaves_the_legacy_side_alone_is_confirmed_without_a_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(monkeypatch, legacy=10)
    cluster.move_to(5)  # one new pod; legacy keeps its 10
    assert [name for name, _ in cluster.writes] == ["app-v2"]
    assert BASELINE not in cluster.bodies["app-v1"]["metadata"]["annotations"]
    cluster.move_to(50)
    assert cluster.bodies["app-v1"]["metadata"]["annotations"][BASELINE] == "10"


def test_the_weight_read_back_is_the_one_asked_for_once_both_sides_settle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(monkeypatch, legacy=10)
    cluster.move_to(5)
    # 1 new pod beside 10 legacy ones is a 9 % share; the status asked for 5 %.
    assert cluster.router().read_weight() == 5
    cluster.recorded = None  # nothing recorded (a Rollout's first pass): the share
    assert cluster.router().read_weight() == 9
    cluster.recorded = 50  # asked for, not there yet: the share, so the engine asks again
    assert cluster.router().read_weight() == 9


def test_the_recorded_baseline_outlives_a_scaled_legacy_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(monkeypatch, legacy=4)
    cluster.move_to(50)
    cluster.move_to(0)  # back: the legacy side returns to its baseline, not to what it had
    assert cluster.bodies["app-v1"]["spec"]["replicas"] == 4
    assert cluster.bodies["app-v2"]["spec"]["replicas"] == 0


def test_a_count_written_is_not_asked_for_again_before_its_watch_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(monkeypatch, legacy=4)
    cluster.lagging = True  # a loaded API server: the watch trails the writes
    for _ in range(3):  # passes before any event arrives
        asyncio.run(cluster.router().set_weight(50))
    assert [name for name, _ in cluster.writes] == ["app-v2"]
    cluster.settle()  # the new pods are ready, the events still on their way
    for _ in range(3):
        asyncio.run(cluster.router().set_weight(50))
    # The new side's pods are not ready as far as the operator knows: no shrinking yet.
    assert [name for name, _ in cluster.writes] == ["app-v2"]
    cluster.deliver()
    for _ in range(3):
        asyncio.run(cluster.router().set_weight(50))
    assert [name for name, _ in cluster.writes] == ["app-v2", "app-v1"]


def test_an_older_watch_event_does_not_take_back_a_count_a_write_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(monkeypatch, legacy=4)
    cluster.lagging = True
    stale = json.loads(json.dumps(cluster.bodies["app-v2"]))  # 0 replicas
    asyncio.run(cluster.router().set_weight(25))
    state = cluster.store.deployment("ns", "app-v2")
    assert state is not None and state.desired == 1
    cluster.store.put("Deployment", stale)  # an event from before the write, late
    state = cluster.store.deployment("ns", "app-v2")
    assert state is not None and state.desired == 1
    cluster.deliver()
    cluster.settle()
    cluster.deliver()
    state = cluster.store.deployment("ns", "app-v2")
    assert state is not None and (state.desired, state.ready) == (1, 1)
