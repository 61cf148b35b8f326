"""Segments on the Gateway API router, on the real cluster: a setSegment step sends exactly
the named customers to the new version (the traffic simulator follows the HTTPRoute and
counts requests per customer), percentages follow with the segment kept, and a rollback
removes the segment rule in the same write that moves the weight back."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client

from segue_testkit.scenario.sim import Sim, launch_sim
from segue_testkit.scenario.watching import ObjectWatch
from tests.e2e.support import Rollouts, apply, shop_pair, wait_until

pytestmark = pytest.mark.e2e

CUSTOMERS = ("acme", "globex", "initech", "umbrella")
SEGMENT = {"header": "x-customer-id", "values": ["acme", "globex"]}


@pytest.fixture
def workloads(kube: Any, namespace: str, crds: None) -> Rollouts:
    return shop_pair(kube, namespace)


@pytest.fixture
def sim(kube: Any, namespace: str, workloads: Rollouts, tmp_path: Any) -> Any:
    s = launch_sim(
        kube.kubeconfig,
        "shop",
        "--httproute", f"{namespace}/shop", "--legacy-backend", "shop-v1",
        "--new-backend", "shop-v2", "--customers", ",".join(CUSTOMERS),
        "--customer-header", "x-customer-id", "--poll", "0.2",
        log=tmp_path / "trafficsim.log",
    )  # fmt: skip
    yield s
    s.stop()


def rollout(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "shop"},
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
            **spec,
        },
    }


def routed(sim: Sim, seconds: float = 2.0) -> dict[tuple[str, str], float]:
    """Requests per (customer, version) over the next ``seconds``."""
    before = sim.requests()
    time.sleep(seconds)
    after = sim.requests()
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0)}


def segment_rules(route: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in route["spec"]["rules"] if r.get("name") == "segue-segment"]


def new_weight(route: dict[str, Any]) -> int:
    refs = route["spec"]["rules"][0]["backendRefs"]
    return int(next(r.get("weight", 1) for r in refs if r["name"] == "shop-v2"))


def test_a_segment_sends_exactly_its_customers_then_percentages_follow(
    kube, namespace, workloads, operator, sim
):
    steps = [
        {"setSegment": SEGMENT},
        {"approval": {}},
        {"setWeight": 50},
        {"approval": {}},
        {"setWeight": 100},
    ]
    apply(kube, namespace, rollout(steps=steps))
    wait_until(
        "the segment step confirmed",
        lambda: workloads.status("shop"),
        lambda s: s.get("phase") == "AwaitingApproval" and s.get("step") == 1,
        90,
    )
    route = workloads.get_route("shop")
    (rule,) = segment_rules(route)
    assert new_weight(route) == 0
    assert [h["value"] for m in rule["matches"] for h in m["headers"]] == ["acme", "globex"]
    # Let the simulator see the route, then count: only acme and globex reach v2.
    wait_until("the simulator follows", lambda: routed(sim, 0.6), lambda c: ("acme", "v2") in c)
    counts = routed(sim)
    assert {c for c, v in counts if v == "v2"} == {"acme", "globex"}
    assert {c for c, v in counts if v == "v1"} == {"initech", "umbrella"}
    status = workloads.status("shop")
    assert status["segment"] == SEGMENT
    assert "SegmentSet" in [h["event"] for h in status["history"]]

    kube.kubectl("annotate", "-n", namespace, "rollout", "shop", "segue.dev/approve=1")
    wait_until(
        "50% with the segment",
        lambda: workloads.status("shop"),
        lambda s: s.get("phase") == "AwaitingApproval" and s.get("step") == 3,
        90,
    )
    route = workloads.get_route("shop")
    assert new_weight(route) == 50 and len(segment_rules(route)) == 1
    wait_until(
        "the simulator splits the others",
        lambda: routed(sim, 1.0),
        lambda c: ("initech", "v2") in c and ("umbrella", "v1") in c,
    )
    counts = routed(sim)
    assert ("acme", "v1") not in counts and ("globex", "v1") not in counts
    for customer in ("initech", "umbrella"):
        share = counts.get((customer, "v2"), 0) / (
            counts.get((customer, "v2"), 0) + counts.get((customer, "v1"), 0)
        )
        assert 0.3 < share < 0.7, (customer, counts)

    # An abort: every version of the route the watch sees has either both the segment rule
    # and weight 50, or neither (weight 0, no rule): one write moves both.
    watch = ObjectWatch(
        client.CustomObjectsApi(kube.api_client).list_namespaced_custom_object,
        ("gateway.networking.k8s.io", "v1", namespace, "httproutes"),
    ).start()
    try:
        time.sleep(0.5)
        kube.kubectl("annotate", "-n", namespace, "rollout", "shop", "segue.dev/abort=bad")
        wait_until("RolledBack", lambda: workloads.phase("shop"), lambda p: p == "RolledBack", 60)
        time.sleep(0.5)
    finally:
        watch.stop()
    shapes = [(new_weight(s.obj), len(segment_rules(s.obj))) for s in watch.events["shop"]]
    assert shapes[-1] == (0, 0)
    assert set(shapes) <= {(50, 1), (0, 0)}, shapes
    route = workloads.get_route("shop")
    assert segment_rules(route) == [] and new_weight(route) == 0
    assert workloads.status("shop").get("segment") is None
    counts = routed(sim, 1.5)
    assert {v for _, v in counts} == {"v1"}, counts


def test_the_replicas_router_refuses_a_segment_at_apply(kube, namespace, workloads):
    body = rollout(steps=[{"setSegment": SEGMENT}, {"setWeight": 100}])
    body["spec"]["traffic"] = {"replicas": {}}
    done = kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert done.returncode != 0
    assert "spec.steps: setSegment needs a router that routes by header" in done.stderr
