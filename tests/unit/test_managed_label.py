"""Opt-in reach (``--require-managed-label``): Segue writes only to objects labelled
segue.dev/managed=true. The engine refuses before any traffic moves (Stalled, NotManaged,
a Warning Event naming the object and the fix); the watched summaries carry the label; the
routers refuse to write to an unlabelled object as a second line of defence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from segue.controller import main
from segue.controller.store import Store
from segue.engine import EmitEvent, SetWeight
from segue.traffic.base import RouterError
from segue.traffic.gatewayapi.router import GatewayAPIRouter
from segue.traffic.replicas.router import ReplicasRouter
from segue.workloads.deployments import DeploymentState
from tests.unit.conftest import Sim, actions_of, make_spec, warnings_of, weights_of

T = TypeVar("T")
ROUTE = ("HTTPRoute", "ns", "checkout")
FIX = "kubectl label httproute checkout -n ns segue.dev/managed=true"
LABELLED = {"segue.dev/managed": "true"}


def _stalled(sim: Sim) -> tuple[str, str, str]:
    c = sim.st.condition("Stalled")
    assert c is not None
    return c.status, c.reason, c.message


def _at_25_percent() -> Sim:
    sim = Sim(make_spec(risk="low", hold="1h"))
    sim.run(lambda s: s.st.step == 3)  # 25 %, holding
    assert sim.router == 25
    return sim


# --- the engine ------------------------------------------------------------------------


def test_an_unlabelled_route_is_refused_before_any_traffic_moves() -> None:
    sim = Sim(make_spec(steps=[{"setWeight": 50}]), unmanaged=(ROUTE,))
    d = sim.tick()
    assert weights_of(d) == [] and sim.router == 0
    assert sim.phase() == "Pending"
    status, reason, message = _stalled(sim)
    assert (status, reason) == ("True", "NotManaged")
    assert message == (
        "not managed: HTTPRoute ns/checkout is not labelled segue.dev/managed=true, and this "
        f"operator writes only to labelled objects; to let Segue move traffic, opt it in: {FIX}"
    )
    assert sim.st.message == message
    assert [e.message for e in actions_of(d, EmitEvent) if e.reason == "NotManaged"] == [message]
    progressing = sim.st.condition("Progressing")
    assert progressing is not None and progressing.status == "False"
    # Said once: the same refusal again is no new Event.
    d = sim.tick(30)
    assert weights_of(d) == [] and "NotManaged" not in warnings_of(d)
    # Labelled: the plan starts at once.
    sim.unmanaged = ()
    d = sim.tick(1)
    assert sim.router == 50
    assert _stalled(sim)[0] == "False"


def test_every_unlabelled_object_is_named_with_one_command_per_kind() -> None:
    sim = Sim(
        make_spec(traffic={"replicas": {}}, steps=[{"setWeight": 50}]),
        manages_capacity=True,
        unmanaged=(("Deployment", "ns", "checkout-v1"), ("Deployment", "ns", "checkout-v2")),
    )
    sim.tick()
    message = _stalled(sim)[2]
    assert "Deployment ns/checkout-v1, Deployment ns/checkout-v2 are not labelled" in message
    assert message.endswith(
        "opt them in: kubectl label deployment checkout-v1 checkout-v2 -n ns segue.dev/managed=true"
    )


def test_a_label_lost_mid_way_holds_traffic_and_an_abort_waits_for_it_visibly() -> None:
    sim = _at_25_percent()
    sim.unmanaged = (ROUTE,)
    d = sim.tick(1)
    assert weights_of(d) == [] and "NotManaged" in warnings_of(d)
    assert _stalled(sim)[1] == "NotManaged"
    sim.annotations["segue.dev/abort"] = "bad release"
    d = sim.tick(1)
    assert weights_of(d) == [] and sim.router == 25
    assert sim.phase() == "RollingBack"  # recorded, not lost
    assert sim.st.message is not None
    assert sim.st.message.endswith("the rollback is recorded and takes effect once it is labelled")
    assert "Aborted" in sim.history_events()
    sim.unmanaged = ()
    sim.tick(1)
    assert sim.router == 0
    sim.tick(1)
    assert sim.phase() == "RolledBack"


def test_a_vanished_new_deployment_is_not_rolled_back_through_an_unlabelled_route() -> None:
    sim = _at_25_percent()
    sim.unmanaged = (ROUTE,)
    sim.new_missing = True
    d = sim.tick(1)
    assert weights_of(d) == []
    assert sim.phase() == "RollingBack"
    sim.unmanaged = ()
    d = sim.tick(1)
    assert weights_of(d) == [0]


def test_deleting_with_an_unlabelled_route_releases_within_the_bound_and_says_why() -> None:
    sim = _at_25_percent()
    sim.unmanaged = (ROUTE,)
    sim.delete()
    d = sim.tick()
    assert weights_of(d) == [] and not sim.released
    assert d.requeue_after is not None and d.requeue_after <= 50
    sim.now += timedelta(seconds=50)
    d = sim.tick()
    assert sim.released
    deleted = [e for e in actions_of(d, EmitEvent) if e.reason == "Deleted"]
    assert [(e.type, e.message) for e in deleted] == [
        (
            "Warning",
            "deleted; traffic could not be returned: HTTPRoute ns/checkout is not labelled "
            "segue.dev/managed=true, the new version still has 25%",
        )
    ]


def test_an_abort_under_an_invalid_spec_does_not_write_to_an_unlabelled_route() -> None:
    sim = _at_25_percent()
    sim.unmanaged = (ROUTE,)
    sim.annotations["segue.dev/abort"] = "x"
    d = sim.invalid("spec.steps: bad")
    assert weights_of(d) == []
    assert sim.st.message is not None
    assert "HTTPRoute ns/checkout is not labelled segue.dev/managed=true" in sim.st.message


# --- the watched summaries -------------------------------------------------------------


def _deployment(labels: dict[str, str] | None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "d", "generation": 1, "labels": labels},
        "spec": {"replicas": 1, "template": {}},
        "status": {"readyReplicas": 1, "updatedReplicas": 1},
    }


def _route(labels: dict[str, str] | None, rv: str) -> dict[str, Any]:
    backends = [{"name": "checkout-v1", "weight": 100}, {"name": "checkout-v2", "weight": 0}]
    return {
        "metadata": {
            "namespace": "ns",
            "name": "checkout",
            "resourceVersion": rv,
            "labels": labels,
        },
        "spec": {"rules": [{"backendRefs": backends}]},
    }


def test_the_store_knows_whether_each_object_is_labelled() -> None:
    store = Store()
    store.put("Deployment", _deployment(LABELLED))
    state = store.deployment("ns", "d")
    assert state is not None and state.managed
    # A label removed is a metadata change (same generation): seen all the same.
    store.put("Deployment", _deployment({"segue.dev/managed": "false", "app": "x"}))
    state = store.deployment("ns", "d")
    assert state == DeploymentState.from_body(_deployment(None))
    assert state is not None and not state.managed
    store.put("HTTPRoute", _route({**LABELLED, "team": "a"}, "1"))
    route = store.get("HTTPRoute", "ns", "checkout")
    assert route is not None
    assert route["metadata"]["labels"] == LABELLED  # no others
    store.put("HTTPRoute", _route(None, "2"))
    route = store.get("HTTPRoute", "ns", "checkout")
    assert route is not None and route["metadata"]["labels"] == {}


# --- the routers -----------------------------------------------------------------------


class RecordingCalls:
    """Counts the Kubernetes calls a router makes, and makes none."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, fn: Callable[[Any], T]) -> T:
        self.calls += 1
        raise AssertionError("no call expected")


def _gateway(store: Store, calls: Any, require: bool) -> GatewayAPIRouter:
    return GatewayAPIRouter(
        store, calls, "ns", "checkout", "checkout-v1", "checkout-v2", require_managed=require
    )


def test_the_gateway_router_refuses_to_write_an_unlabelled_route() -> None:
    store = Store()
    store.put("HTTPRoute", _route(None, "1"))
    calls = RecordingCalls()
    assert _gateway(store, calls, require=False).unmanaged() == []
    router = _gateway(store, calls, require=True)
    assert router.unmanaged() == [ROUTE]
    assert router.read_weight() == 0  # reading is fine
    with pytest.raises(RouterError, match="HTTPRoute ns/checkout is not labelled segue"):
        asyncio.run(router.set_weight(10))
    assert calls.calls == 0
    # Not there at all: that is a missing route, not an unmanaged one.
    assert _gateway(Store(), calls, require=True).unmanaged() == []


def test_the_gateway_router_guards_its_patch_with_the_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[list[dict[str, Any]]] = []

    class Calls:
        async def call(self, fn: Callable[[Any], T]) -> T:
            return fn(None)

    def patch(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        sent.append(args[5])
        return {}

    from kubernetes import client

    monkeypatch.setattr(client.CustomObjectsApi, "patch_namespaced_custom_object", patch)
    store = Store()
    store.put("HTTPRoute", _route(LABELLED, "1"))
    asyncio.run(_gateway(store, Calls(), require=True).set_weight(10))
    assert sent[0][0] == {
        "op": "test",
        "path": "/metadata/labels/segue.dev~1managed",
        "value": "true",
    }
    asyncio.run(_gateway(store, Calls(), require=False).set_weight(20))
    assert all(op["path"] != "/metadata/labels/segue.dev~1managed" for op in sent[1])


def test_the_replicas_router_refuses_to_scale_unlabelled_deployments() -> None:
    store = Store()
    for name, labels in (("checkout-v1", LABELLED), ("checkout-v2", None)):
        body = _deployment(labels)
        body["metadata"]["name"] = name
        store.put("Deployment", body)
    calls = RecordingCalls()
    router = ReplicasRouter(store, calls, "ns", "checkout-v1", "checkout-v2", require_managed=True)
    assert router.unmanaged() == [("Deployment", "ns", "checkout-v2")]
    with pytest.raises(RouterError, match="Deployment ns/checkout-v2 is not labelled"):
        asyncio.run(router.set_weight(50))
    assert calls.calls == 0
    lax = ReplicasRouter(store, calls, "ns", "checkout-v1", "checkout-v2")
    assert lax.unmanaged() == []


# --- the flag --------------------------------------------------------------------------


def test_the_flag_defaults_off_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEGUE_REQUIRE_MANAGED_LABEL", raising=False)
    assert main.parse_args([]).require_managed_label is False
    assert main.parse_args(["--require-managed-label"]).require_managed_label is True
    monkeypatch.setenv("SEGUE_REQUIRE_MANAGED_LABEL", "true")
    assert main.parse_args([]).require_managed_label is True
    assert main.parse_args(["--no-require-managed-label"]).require_managed_label is False
    monkeypatch.setenv("SEGUE_REQUIRE_MANAGED_LABEL", "ture")
    with pytest.raises(SystemExit, match="SEGUE_REQUIRE_MANAGED_LABEL='ture': expected true"):
        main.parse_args([])


def test_the_engine_never_asks_for_a_weight_while_an_object_is_unmanaged() -> None:
    sim = _at_25_percent()
    sim.unmanaged = (ROUTE,)
    for _ in range(5):
        d = sim.tick(3600)
        assert not actions_of(d, SetWeight)
    assert sim.router == 25
