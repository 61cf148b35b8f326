"""Rollouts on the NGINX Ingress router, driven by the real operator on the local cluster,
with the traffic simulator following the canary Ingress the way ingress-nginx would.

There is no ingress-nginx in the local cluster: the Ingresses are real API objects, and the
simulator (``--canary-ingress``) applies their canary annotations to each simulated request.
Every write to the canary Ingress is seen by a watch, so "one write" is counted, not assumed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from segue import MANAGED_LABEL, MANAGED_VALUE
from segue.controller.store import Store
from segue.traffic.base import RouterError
from segue.traffic.nginx.pairing import Pairing
from segue.traffic.nginx.router import NginxRouter
from segue_testkit.scenario import ObjectWatch, Seen, service
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

T = TypeVar("T")
P = "nginx.ingress.kubernetes.io"
HOST = "shop.example"
CUSTOMERS = ("acme", "globex", "initech", "umbrella")
SEGMENT = {"header": "x-customer-id", "values": ["acme", "globex"]}


# --- manifests --------------------------------------------------------------------------


def ingress(name: str, service_name: str, annotations: dict[str, str] | None = None) -> Any:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "labels": {MANAGED_LABEL: MANAGED_VALUE},
            "annotations": annotations or {},
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [
                {
                    "host": HOST,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {"name": service_name, "port": {"number": 80}}
                                },
                            }
                        ]
                    },
                }
            ],
        },
    }


def canary_ingress(service_name: str = "shop-v2") -> Any:
    return ingress("shop-canary", service_name, {f"{P}/canary": "true"})


def rollout(name: str = "shop", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "legacy": {"deployment": "shop-v1", "version": "v1"},
            "new": {"deployment": "shop-v2", "version": "v2"},
            "traffic": {
                "nginx": {
                    "ingress": "shop",
                    "canaryIngress": "shop-canary",
                    "legacyService": "shop-v1",
                    "newService": "shop-v2",
                }
            },
            **spec,
        },
    }


# --- reading the canary Ingress ---------------------------------------------------------


def canary_state(obj: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(canary-weight, canary-by-header, canary-by-header-pattern) of an Ingress."""
    a = (obj.get("metadata") or {}).get("annotations") or {}
    return (
        a.get(f"{P}/canary-weight"),
        a.get(f"{P}/canary-by-header"),
        a.get(f"{P}/canary-by-header-pattern"),
    )


def writes(watch: ObjectWatch, after: float) -> list[Seen]:
    """The changes to the canary Ingress the watch saw after ``after`` (Unix time)."""
    return [s for s in watch.events.get("shop-canary", []) if s.at >= after]


def weights_seen(watch: ObjectWatch) -> list[str | None]:
    """Each distinct canary-weight, in the order the watch saw them."""
    out: list[str | None] = []
    for seen in watch.events.get("shop-canary", []):
        weight = canary_state(seen.obj)[0]
        if not out or out[-1] != weight:
            out.append(weight)
    return out


# --- the simulator, per customer ----------------------------------------------------------


def requests_by_customer(sim: Sim) -> Counter[tuple[str, str]]:
    """Requests so far by (customer, version), from the simulator's own /metrics."""
    return Counter({k: int(v) for k, v in sim.requests().items()})


def traffic_once_split(sim: Sim, settled: Callable[[Counter[tuple[str, str]]], bool]) -> Any:
    """The requests each customer sent to each version over a stretch in which the split
    stayed as it is now. ``settled`` says when the simulator routes by the current split (a
    tick that used the old one can only come before one that used the new one), then the
    counts are taken over the next 200 requests or more of every customer."""
    start = wait_until(
        "the simulator to route by the new split", lambda: requests_by_customer(sim), settled
    )

    def grown(now: Counter[tuple[str, str]]) -> bool:
        return all(sum(now[(c, v)] - start[(c, v)] for v in ("v1", "v2")) >= 200 for c in CUSTOMERS)

    end = wait_until(
        "200 more requests of every customer", lambda: requests_by_customer(sim), grown
    )
    return {(c, v): end[(c, v)] - start[(c, v)] for c in CUSTOMERS for v in ("v1", "v2")}


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def shop(kube: Any, namespace: str, crds: None) -> Rollouts:
    """Deployments shop-v1 and shop-v2 (ready), a Service each, the primary Ingress routing
    shop.example to shop-v1 and the canary Ingress routing it to shop-v2."""
    apply(
        kube,
        namespace,
        deployment("shop-v1", "shop"),
        deployment("shop-v2", "shop"),
        service("shop-v1", "shop", "shop-v1"),
        service("shop-v2", "shop", "shop-v2"),
        ingress("shop", "shop-v1"),
        canary_ingress(),
    )
    rollouts = Rollouts(kube.api_client, namespace)
    for name in ("shop-v1", "shop-v2"):
        wait_until(f"{name} ready", partial(rollouts.replicas, name), lambda r: r[1] == 2)
    return rollouts


@pytest.fixture
def ingress_watch(kube: Any, namespace: str) -> Iterator[ObjectWatch]:
    watch = ObjectWatch(
        client.NetworkingV1Api(kube.api_client).list_namespaced_ingress, (namespace,)
    ).start()
    wait_until(
        "the watch to list the canary Ingress",
        lambda: watch.latest("shop-canary"),
        lambda obj: obj is not None,
    )
    try:
        yield watch
    finally:
        watch.stop()


@pytest.fixture
def sim(kube: Any, namespace: str, shop: Rollouts, tmp_path: Path) -> Iterator[Sim]:
    """The simulator following the canary Ingress, with four customers."""
    running = launch_sim(
        kube.kubeconfig,
        "shop",
        "--canary-ingress",
        f"{namespace}/shop-canary",
        "--customers",
        ",".join(CUSTOMERS),
        log=tmp_path / "trafficsim.log",
    )
    try:
        yield running
    finally:
        running.stop()


def phase(rollouts: Rollouts, wanted: str, timeout: float = 90) -> dict[str, Any]:
    return wait_until(
        wanted, lambda: rollouts.status("shop"), lambda s: s.get("phase") == wanted, timeout
    )


def sim_split(sim: Sim, weight: float, segment: list[str]) -> None:
    wait_until(
        f"the simulator to read {weight:g} % and segment {segment}",
        sim.config,
        lambda c: c["weight"] == weight and c["segment"] == segment,
    )


# --- tests -------------------------------------------------------------------------------


def test_promotes_to_100_and_the_simulator_follows(
    kube: Any, namespace: str, shop: Rollouts, ingress_watch: ObjectWatch, sim: Sim, operator: Any
) -> None:
    steps = [
        {"setWeight": 10},
        {"pause": {"duration": "1s"}},
        {"setWeight": 50},
        {"pause": {"duration": "1s"}},
    ]
    apply(kube, namespace, rollout(steps=steps))
    phase(shop, "Succeeded")
    sim_split(sim, 100.0, [])
    assert weights_seen(ingress_watch) == [None, "10", "50", "100"]
    final = ingress_watch.latest("shop-canary")
    assert final is not None
    annotations = final["metadata"]["annotations"]
    assert annotations[f"{P}/canary-weight-total"] == "100"
    assert annotations[f"{P}/canary"] == "true"
    # Segue's field manager owns what it wrote, nothing else.
    managers = {m["manager"] for m in final["metadata"]["managedFields"]}
    assert "segue" in managers
    history = shop.status("shop")["history"]
    assert [h["weight"] for h in history if h["event"] == "WeightSet"] == [10, 50, 100]
    # The primary Ingress was never written.
    primary = ingress_watch.latest("shop")
    assert primary is not None
    assert [s.type for s in ingress_watch.events["shop"]] == ["ADDED"]


def test_a_segment_then_percentages_then_one_write_back(
    kube: Any, namespace: str, shop: Rollouts, ingress_watch: ObjectWatch, sim: Sim, operator: Any
) -> None:
    steps = [{"setSegment": SEGMENT}, {"approval": {}}, {"setWeight": 50}, {"approval": {}}]
    apply(kube, namespace, rollout(steps=steps))

    # Only acme and globex go to the new version; the others stay on legacy.
    status = phase(shop, "AwaitingApproval")
    assert status["step"] == 1
    assert canary_state(ingress_watch.latest("shop-canary") or {}) == (
        "0",
        "x-customer-id",
        "^(acme|globex)$",
    )
    sim_split(sim, 0.0, ["acme", "globex"])
    counts = traffic_once_split(sim, lambda c: c[("acme", "v2")] > 0)
    for customer in ("acme", "globex"):
        assert counts[(customer, "v1")] == 0 and counts[(customer, "v2")] >= 200
    for customer in ("initech", "umbrella"):
        assert counts[(customer, "v2")] == 0 and counts[(customer, "v1")] >= 200

    # 50 %: the segment stays, everyone else splits by the weight.
    shop.annotate("shop", {"segue.dev/approve": "1"})
    wait_until(
        "step 3",
        lambda: shop.status("shop"),
        lambda s: s.get("phase") == "AwaitingApproval" and s["step"] == 3,
    )
    sim_split(sim, 50.0, ["acme", "globex"])
    counts = traffic_once_split(sim, lambda c: c[("initech", "v2")] > 0)
    for customer in ("acme", "globex"):
        assert counts[(customer, "v1")] == 0
    for customer in ("initech", "umbrella"):
        # The simulator counts exactly, to within a request per tick and version.
        assert abs(counts[(customer, "v1")] - counts[(customer, "v2")]) <= 2

    # An abort: weight 0 and no by-header rule, in one write.
    before = time.time()
    kube.kubectl(
        "annotate",
        "-n",
        namespace,
        "rollout.segue.dev/shop",
        "segue.dev/abort=checkout errors reported by support",
    )
    phase(shop, "RolledBack", 30)
    sim_split(sim, 0.0, [])
    changes = writes(ingress_watch, before)
    assert [canary_state(s.obj) for s in changes] == [("0", None, None)]
    assert canary_state(ingress_watch.latest("shop-canary") or {}) == ("0", None, None)
    history = shop.status("shop")["history"]
    assert any("checkout errors reported by support" in (h.get("reason") or "") for h in history)


def test_a_graceful_rollback_ramps_down_strictly(
    kube: Any, namespace: str, shop: Rollouts, ingress_watch: ObjectWatch, operator: Any
) -> None:
    apply(
        kube,
        namespace,
        rollout(
            steps=[{"setSegment": SEGMENT}, {"setWeight": 40}, {"approval": {}}],
            rollback={"mode": "graceful", "duration": "8s"},
        ),
    )
    phase(shop, "AwaitingApproval")
    before = time.time()
    shop.annotate("shop", {"segue.dev/abort": "slow checkout"})
    phase(shop, "RolledBack", 60)
    ramp = [canary_state(s.obj) for s in writes(ingress_watch, before)]
    weights = [int(w or 0) for w, _, _ in ramp]
    # One write per whole percent the line crosses (at least a second apart): a ramp, each
    # write lower than the one before, ending at 0.
    assert len(weights) >= 3, ramp
    assert weights[0] <= 40 and weights[-1] == 0
    assert all(a > b for a, b in itertools.pairwise(weights)), weights
    # The segment goes in the first write back, not at the end.
    assert all(header is None and pattern is None for _, header, pattern in ramp), ramp


def test_kill_9_mid_plan_resumes_without_repeating_a_step(
    kube: Any, namespace: str, shop: Rollouts, ingress_watch: ObjectWatch, tmp_path: Path
) -> None:
    steps = [
        {"setSegment": SEGMENT},
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
        phase(shop, "AwaitingApproval")
    finally:
        first.stop(sig=9)  # killed, not shut down: no chance to tidy up
    before = shop.status("shop")
    assert before["step"] == 4
    assert canary_state(ingress_watch.latest("shop-canary") or {})[:2] == ("20", "x-customer-id")

    second = start_operator(kube.kubeconfig, tmp_path / "op2.log", [namespace])
    try:
        # It leads once the killed operator's Lease has expired, and only then acts.
        wait_until("the second operator to lead", lambda: "became leader" in second.log(), bool, 30)
        shop.annotate("shop", {"segue.dev/approve": "4"})
        phase(shop, "Succeeded", 60)
    finally:
        second.stop()
    history = shop.status("shop")["history"]
    assert [h["weight"] for h in history if h["event"] == "WeightSet"] == [10, 20, 60, 100]
    assert [h["event"] for h in history].count("SegmentSet") == 1
    assert weights_seen(ingress_watch) == [None, "0", "10", "20", "60", "100"]
    # At 100 % the segment rule went, in the write that set 100.
    assert canary_state(ingress_watch.latest("shop-canary") or {}) == ("100", None, None)


def test_a_canary_routing_elsewhere_is_reported_and_nothing_is_written(
    kube: Any, namespace: str, shop: Rollouts, ingress_watch: ObjectWatch, operator: Any
) -> None:
    apply(kube, namespace, canary_ingress("shop-v3"))
    ingress_watch.wait("the wrong backend", "shop-canary", lambda o: "shop-v3" in str(o["spec"]))
    apply(kube, namespace, rollout(steps=[{"setWeight": 50}]))
    stalled = wait_until(
        "a Stalled condition",
        lambda: {c["type"]: c for c in shop.status("shop").get("conditions", [])},
        lambda c: c.get("Stalled", {}).get("status") == "True",
    )
    assert (
        f"Ingress {namespace}/shop-canary (spec.traffic.nginx.canaryIngress) routes "
        f"shop.example/ (Prefix) to Service {namespace}/shop-v3, but "
        "spec.traffic.nginx.newService is shop-v2" in stalled["Stalled"]["message"]
    )
    wait_until(
        "a MissingReference Event",
        lambda: [r for _, r, _ in shop.events("shop")],
        lambda reasons: "MissingReference" in reasons,
    )
    assert weights_seen(ingress_watch) == [None]
    apply(kube, namespace, canary_ingress())
    phase(shop, "Succeeded")
    assert weights_seen(ingress_watch)[-1] == "100"


def test_the_api_server_refuses_a_header_nginx_would_drop(
    kube: Any, namespace: str, crds: None
) -> None:
    bad = rollout(steps=[{"setSegment": {"header": "x_customer", "values": ["acme"]}}])
    done = kube.kubectl("apply", "-n", namespace, "-f", "-", input=_yaml(bad), check=False)
    assert done.returncode != 0
    assert "setSegment.header must be lower-case letters, digits and '-'" in done.stderr


def test_a_write_on_a_changed_ingress_fails_instead_of_overwriting(
    kube: Any, namespace: str, shop: Rollouts
) -> None:
    objects = client.CustomObjectsApi(kube.api_client)

    def read(name: str) -> dict[str, Any]:
        obj: Any = objects.get_namespaced_custom_object(
            "networking.k8s.io", "v1", namespace, "ingresses", name
        )
        return dict(obj)

    store = Store()
    store.put("Ingress", read("shop"))
    store.put("Ingress", read("shop-canary"))
    router = NginxRouter(
        store,
        _Calls(kube.api_client),
        Pairing(namespace, "shop", "shop-canary", "shop-v1", "shop-v2", P),
        require_managed=True,
    )
    # Someone edits the canary Ingress after the router's copy was taken.
    kube.kubectl("annotate", "-n", namespace, "ingress/shop-canary", "team=checkout")
    with pytest.raises(RouterError, match="changed while writing; retrying"):
        asyncio.run(router.set_weight(30))
    assert canary_state(read("shop-canary")) == (None, None, None)
    # With the current copy (as the watch delivers it) the write goes through.
    store.put("Ingress", read("shop-canary"))
    asyncio.run(router.set_weight(30))
    assert router.read_weight() == 30  # from the write's response
    annotations = read("shop-canary")["metadata"]["annotations"]
    assert annotations[f"{P}/canary-weight"] == "30"
    assert annotations["team"] == "checkout"


class _Calls:
    """Runs the router's client calls on the test's own client."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    async def call(self, fn: Callable[[client.ApiClient], T]) -> T:
        return fn(self.api)


def _yaml(doc: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(doc)
