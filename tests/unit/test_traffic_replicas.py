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
    def read(self) -> bytes:
        return b"{}"

    def release_conn(self) -> None:
        pass


class Calls:
    async def call(self, fn: Callable[[Any], T]) -> T:
        return fn(None)


class Cluster:
    """Two Deployments whose pods become ready when ``settle`` is called."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, legacy: int) -> None:
        self.store = Store()
        self.writes: list[Write] = []
        self.bodies = {"app-v1": self._body("app-v1", legacy), "app-v2": self._body("app-v2", 0)}
        for body in self.bodies.values():
            self.store.put("Deployment", body)
        cluster = self

        def patch(self: Any, name: str, namespace: str, body: Any, **_: Any) -> Answer:
            cluster.apply(name, body)
            return Answer()

        monkeypatch.setattr(client.AppsV1Api, "patch_namespaced_deployment", patch)
        monkeypatch.setattr(client.AppsV1Api, "patch_namespaced_deployment_scale", patch)
        self.recorded: int | None = None  # the Rollout's status.targetWeight

    def router(self) -> ReplicasRouter:
        """As each pass builds it: with the weight the status records as asked."""
        return ReplicasRouter(self.store, Calls(), "ns", "app-v1", "app-v2", asked=self.recorded)

    @staticmethod
    def _body(name: str, replicas: int) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "ns", "name": name, "generation": 1, "annotations": {}},
            "spec": {"replicas": replicas, "template": {"spec": {}}},
            "status": {"readyReplicas": replicas, "updatedReplicas": replicas,
                       "replicas": replicas, "observedGeneration": 1},
        }  # fmt: skip

    def apply(self, name: str, patch: dict[str, Any]) -> None:
        self.writes.append((name, json.loads(json.dumps(patch))))
        body = self.bodies[name]
        body["metadata"]["annotations"].update((patch.get("metadata") or {}).get("annotations", {}))
        if "replicas" in (patch.get("spec") or {}):
            body["spec"]["replicas"] = patch["spec"]["replicas"]
            body["metadata"]["generation"] += 1
        self.store.put("Deployment", body)

    def settle(self) -> None:
        for body in self.bodies.values():
            n = body["spec"]["replicas"]
            body["status"].update(readyReplicas=n, updatedReplicas=n, replicas=n,
                                  observedGeneration=body["metadata"]["generation"])  # fmt: skip
            self.store.put("Deployment", body)

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
