"""A Rollout on the Istio router, driven by the real operator on the local cluster with
Istio's real CRDs (istio.io/api), and the traffic simulator following the VirtualService as
Istio would route each customer's requests. Every write to the VirtualService is seen on a
watch stream, so "one write" below means one change event."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import yaml
from kubernetes import client

from segue import MANAGED_LABEL, MANAGED_VALUE
from segue_testkit.scenario import ObjectWatch
from tests.e2e.support import (
    Rollouts,
    Sim,
    apply,
    deployment,
    launch_sim,
    start_operator,
    wait_until,
)

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"
SEGMENT_ROUTE = "segue-segment"
CUSTOMERS = ("acme", "globex", "initech", "umbrella")
PINNED = ("acme", "globex")
OTHERS = ("initech", "umbrella")


def virtual_service() -> dict[str, Any]:
    """Route ``admin`` first (the simulated requests never match it), then ``primary``."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualService",
        "metadata": {"name": "shop", "labels": {MANAGED_LABEL: MANAGED_VALUE}},
        "spec": {
            "hosts": ["shop"],
            "http": [
                {
                    "name": "admin",
                    "match": [{"uri": {"prefix": "/admin"}}],
                    "route": [{"destination": {"host": "shop", "subset": "v1"}}],
                },
                {
                    "name": "primary",
                    "match": [{"uri": {"prefix": "/"}}],
                    "timeout": "5s",
                    "route": [
                        {"destination": {"host": "shop", "subset": "v1"}, "weight": 100},
                        {"destination": {"host": "shop", "subset": "v2"}, "weight": 0},
                    ],
                },
            ],
        },
    }


def destination_rule() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DestinationRule",
        "metadata": {"name": "shop"},
        "spec": {
            "host": "shop",
            "subsets": [
                {"name": "v1", "labels": {"version": "shop-v1"}},
                {"name": "v2", "labels": {"version": "shop-v2"}},
            ],
        },
    }


def rollout(name: str = "shop", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "legacy": {"deployment": "shop-v1", "version": "v1"},
            "new": {"deployment": "shop-v2", "version": "v2"},
            "traffic": {
                "istio": {
                    "virtualService": "shop",
                    "routeName": "primary",
                    "legacyDestination": {"host": "shop", "subset": "v1"},
                    "newDestination": {"host": "shop", "subset": "v2"},
                }
            },
            **spec,
        },
    }


def state(vs: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
    """(the new destination's weight in ``primary``, the customers ``segue-segment`` pins)."""
    http = vs["spec"]["http"]
    primary = next(r for r in http if r.get("name") == "primary")
    new = next(d for d in primary["route"] if d["destination"].get("subset") == "v2")
    segment = next((r for r in http if r.get("name") == SEGMENT_ROUTE), None)
    pinned = [m["headers"]["x-customer-id"]["exact"] for m in (segment or {}).get("match") or []]
    return int(new.get("weight") or 0), tuple(sorted(pinned))


@dataclass
class Istio:
    rollouts: Rollouts
    objects: client.CustomObjectsApi
    namespace: str
    watch: ObjectWatch

    def vs(self) -> dict[str, Any]:
        obj: Any = self.objects.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, "shop"
        )
        return dict(obj)

    def states(self, after: float = 0.0) -> list[tuple[int, tuple[str, ...]]]:
        """The VirtualService's state at every change the watch saw (at or after ``after``,
        Unix time), one entry per write that changed it."""
        out: list[tuple[int, tuple[str, ...]]] = []
        seen = list(self.watch.events.get("shop", []))  # a copy: the watch thread appends
        last_version = None
        for s in seen:
            version = s.obj["metadata"]["resourceVersion"]
            if s.at < after or s.type == "DELETED" or version == last_version:
                continue
            last_version = version
            out.append(state(s.obj))
        return out


@pytest.fixture
def istio(kube: Any, namespace: str, crds: None) -> Iterator[Istio]:
    """Deployments shop-v1 and shop-v2, ready; the DestinationRule and VirtualService shop,
    watched from before any write."""
    objects = client.CustomObjectsApi(kube.api_client)
    watch = ObjectWatch(
        objects.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL)
    ).start()
    apply(
        kube,
        namespace,
        deployment("shop-v1", "shop", 2),
        deployment("shop-v2", "shop", 2),
        destination_rule(),
        virtual_service(),
    )
    rollouts = Rollouts(kube.api_client, namespace)
    for name in ("shop-v1", "shop-v2"):
        wait_until(f"{name} ready", partial(rollouts.replicas, name), lambda r: r[1] == 2)
    setup = Istio(rollouts, objects, namespace, watch)
    watch.wait("the VirtualService on the watch", "shop", lambda _: True)
    try:
        yield setup
    finally:
        watch.stop()


@pytest.fixture
def sim(kube: Any, namespace: str, istio: Istio) -> Iterator[Sim]:
    """The simulator for four customers, following the VirtualService."""
    s = launch_sim(
        kube.kubeconfig,
        f"shop-{namespace}",
        "--virtualservice", f"{namespace}/shop",
        "--legacy-destination", "shop/v1",
        "--new-destination", "shop/v2",
        "--customers", ",".join(CUSTOMERS), "--customer-header", "x-customer-id",
        rate=400,
    )  # fmt: skip
    try:
        yield s
    finally:
        s.stop()


def requests(sim: Sim) -> Counter[tuple[str, str]]:
    """Requests so far per (customer, version), from the simulator's own counters (exact)."""
    return Counter({k: int(v) for k, v in sim.requests().items()})


def traffic_while(sim: Sim, at_least: int = 200) -> Counter[tuple[str, str]]:
    """The requests per (customer, version) from now until every customer has sent
    ``at_least`` more."""
    before = requests(sim)

    def delta() -> Counter[tuple[str, str]]:
        now = requests(sim)
        now.subtract(before)
        return now

    return wait_until(
        f"{at_least} requests per customer",
        delta,
        lambda d: all(d[(c, "v1")] + d[(c, "v2")] >= at_least for c in CUSTOMERS),
        60,
    )


def split_seen(sim: Sim, weight: float, segment: tuple[str, ...]) -> None:
    """Wait until the simulator routes by this weight and segment."""
    wait_until(
        f"the simulator at {weight} % with segment {list(segment)}",
        sim.config,
        lambda c: c.get("weight") == weight and tuple(c.get("segment", [])) == segment,
        30,
    )


def test_promotes_to_100_one_write_per_step(kube, namespace, istio, sim, operator):
    steps = [{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 50}]
    apply(kube, namespace, rollout(steps=steps))
    wait_until("Succeeded", lambda: istio.rollouts.phase("shop"), lambda p: p == "Succeeded", 120)
    split_seen(sim, 100.0, ())
    assert istio.states() == [(0, ()), (20, ()), (50, ()), (100, ())]
    vs = istio.vs()
    weights = [d.get("weight") for d in vs["spec"]["http"][1]["route"]]
    assert weights == [0, 100]
    assert [r["name"] for r in vs["spec"]["http"]] == ["admin", "primary"]
    managers = {m["manager"] for m in vs["metadata"]["managedFields"]}
    assert "segue" in managers
    history = istio.rollouts.status("shop")["history"]
    assert [h["weight"] for h in history if h["event"] == "WeightSet"] == [20, 50, 100]
    counts = traffic_while(sim)
    assert all(counts[(c, "v1")] == 0 for c in CUSTOMERS), counts


def test_a_segment_sends_exactly_its_customers_then_percentages_follow(
    kube, namespace, istio, sim, operator
):
    steps = [
        {"setSegment": {"header": "x-customer-id", "values": list(PINNED)}},
        {"approval": {}},
        {"setWeight": 25},
        {"approval": {}},
    ]
    apply(kube, namespace, rollout(steps=steps))
    status = wait_until(
        "the segment in place",
        lambda: istio.rollouts.status("shop"),
        lambda s: s.get("phase") == "AwaitingApproval" and s.get("step") == 1,
        90,
    )
    assert status["segment"] == {"header": "x-customer-id", "values": list(PINNED)}
    http = istio.vs()["spec"]["http"]
    assert [r["name"] for r in http] == ["admin", SEGMENT_ROUTE, "primary"]
    assert http[1]["timeout"] == "5s"  # a copy of primary, narrowed to the customers
    assert http[1]["route"] == [{"destination": {"host": "shop", "subset": "v2"}}]
    split_seen(sim, 0.0, PINNED)
    counts = traffic_while(sim)
    for c in PINNED:
        assert counts[(c, "v1")] == 0 and counts[(c, "v2")] > 0, counts
    for c in OTHERS:
        assert counts[(c, "v2")] == 0 and counts[(c, "v1")] > 0, counts

    istio.rollouts.annotate("shop", {"segue.dev/approve": "1"})
    wait_until(
        "25 % beside the segment",
        lambda: istio.rollouts.status("shop"),
        lambda s: s.get("phase") == "AwaitingApproval" and s.get("step") == 3,
        90,
    )
    split_seen(sim, 25.0, PINNED)
    counts = traffic_while(sim, at_least=400)
    for c in PINNED:
        assert counts[(c, "v1")] == 0, counts
    for c in OTHERS:
        total = counts[(c, "v1")] + counts[(c, "v2")]
        # The simulator's counts are exact: a quarter, give or take the request in flight
        # at either end of the window.
        assert abs(counts[(c, "v2")] - total / 4) <= 2, counts

    aborted_at = time.time()
    kube.kubectl(
        "annotate", "-n", namespace, "rollout.segue.dev/shop", "segue.dev/abort=support ticket"
    )
    wait_until("RolledBack", lambda: istio.rollouts.phase("shop"), lambda p: p == "RolledBack", 60)
    # Weight and segment went in the same write: nothing in between was ever stored.
    assert istio.states() == [(0, ()), (0, PINNED), (25, PINNED), (0, ())]
    assert istio.states(after=aborted_at) == [(0, ())]
    assert [r["name"] for r in istio.vs()["spec"]["http"]] == ["admin", "primary"]
    status = istio.rollouts.status("shop")
    assert status.get("segment") is None
    assert any("support ticket" in h.get("reason", "") for h in status["history"])
    split_seen(sim, 0.0, ())
    counts = traffic_while(sim)
    assert all(counts[(c, "v2")] == 0 for c in CUSTOMERS), counts


def test_graceful_rollback_ramps_down_strictly(kube, namespace, istio, operator):
    spec = rollout(
        steps=[{"setWeight": 60}, {"approval": {}}],
        rollback={"mode": "graceful", "duration": "6s"},
    )
    apply(kube, namespace, spec)
    wait_until(
        "paused at 60", lambda: istio.rollouts.phase("shop"), lambda p: p == "AwaitingApproval"
    )
    istio.rollouts.annotate("shop", {"segue.dev/abort": "ramp it down"})
    wait_until("RolledBack", lambda: istio.rollouts.phase("shop"), lambda p: p == "RolledBack", 60)
    weights = [w for w, _ in istio.states()]
    ramp = weights[weights.index(60) :]
    assert ramp[-1] == 0 and len(ramp) >= 3, weights  # several writes, not one jump
    assert all(a > b for a, b in itertools.pairwise(ramp)), weights
    assert istio.rollouts.status("shop")["rollback"]["mode"] == "graceful"


def test_kill_9_mid_plan_resumes_without_repeating_a_step(kube, namespace, istio, tmp_path):
    steps = [
        {"setSegment": {"header": "x-customer-id", "values": ["acme"]}},
        {"setWeight": 10},
        {"pause": {"duration": "1s"}},
        {"setWeight": 20},
        {"approval": {}},
        {"setWeight": 60},
        {"pause": {"duration": "1s"}},
    ]
    first = start_operator(kube.kubeconfig, tmp_path / "op1.log", [namespace])
    try:
        apply(kube, namespace, rollout(steps=steps))
        wait_until(
            "approval", lambda: istio.rollouts.phase("shop"), lambda p: p == "AwaitingApproval"
        )
    finally:
        first.stop(sig=9)  # killed, not shut down: no chance to tidy up
    before = istio.rollouts.status("shop")
    assert before["step"] == 4 and state(istio.vs()) == (20, ("acme",))

    second = start_operator(kube.kubeconfig, tmp_path / "op2.log", [namespace])
    try:
        # It leads once the killed operator's Lease has expired, and only then acts at all.
        wait_until("the second operator to lead", lambda: "became leader" in second.log(), bool, 30)
        istio.rollouts.annotate("shop", {"segue.dev/approve": "4"})
        wait_until(
            "Succeeded", lambda: istio.rollouts.phase("shop"), lambda p: p == "Succeeded", 90
        )
    finally:
        second.stop()
    history = istio.rollouts.status("shop")["history"]
    assert [h["weight"] for h in history if h["event"] == "WeightSet"] == [10, 20, 60, 100]
    assert len([h for h in history if h["event"] == "SegmentSet"]) == 1
    # Each weight written once; at 100 % the segment went in the same write.
    assert istio.states() == [
        (0, ()),
        (0, ("acme",)),
        (10, ("acme",)),
        (20, ("acme",)),
        (60, ("acme",)),
        (100, ()),
    ]


def test_a_route_without_the_new_destination_is_reported_then_used(
    kube, namespace, istio, operator
):
    vs = virtual_service()
    vs["spec"]["http"][1]["route"][1]["destination"]["subset"] = "v3"
    apply(kube, namespace, vs)
    apply(kube, namespace, rollout(steps=[{"setWeight": 50}]))
    stalled = wait_until(
        "a Stalled condition",
        lambda: {c["type"]: c for c in istio.rollouts.status("shop").get("conditions", [])},
        lambda c: c.get("Stalled", {}).get("status") == "True",
    )
    message = stalled["Stalled"]["message"]
    assert "VirtualService" in message and "spec.traffic.istio.newDestination" in message, message
    assert "(it has: host shop subset v1, host shop subset v3)" in message, message
    apply(kube, namespace, virtual_service())
    wait_until("Succeeded", lambda: istio.rollouts.phase("shop"), lambda p: p == "Succeeded", 90)


@pytest.mark.parametrize(
    ("istio_spec", "message"),
    [
        (
            {"newDestination": {"host": "shop", "subset": "v1"}},
            "spec.traffic.istio.newDestination: must differ from legacyDestination",
        ),
        (
            {"routeName": SEGMENT_ROUTE},
            "spec.traffic.istio.routeName: segue-segment is the HTTP route Segue writes",
        ),
    ],
)
def test_the_api_server_refuses_bad_settings_naming_the_field(
    kube, namespace, crds, istio_spec, message
):
    bad = rollout()
    bad["spec"]["steps"] = [{"setWeight": 10}]
    bad["spec"]["traffic"]["istio"].update(istio_spec)
    done = kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
