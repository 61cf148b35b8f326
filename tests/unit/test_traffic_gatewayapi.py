"""The Gateway API router's matching of backendRefs, against an in-memory route and a fake
Kubernetes call. The real API server is in tests/e2e/test_rollout_gateway.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from segue.api.routing import Segment
from segue.traffic.base import RouterError
from segue.traffic.gatewayapi.router import GatewayAPIRouter
from segue.workloads.deployments import DeploymentState


class View:
    def __init__(self, refs: list[dict[str, Any]]) -> None:
        self.route: dict[str, Any] = {"spec": {"rules": [{"backendRefs": refs}]}}

    def deployment(self, namespace: str, name: str) -> DeploymentState | None:
        return None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.route

    def put(self, kind: str, body: dict[str, Any]) -> None:
        self.route = body


class Calls:
    def __init__(self) -> None:
        self.patches: list[list[dict[str, Any]]] = []

    async def call(self, fn: Any) -> Any:
        self.patches.append(_patch_of(fn))
        return None


def _patch_of(fn: Any) -> list[dict[str, Any]]:
    for cell in fn.__closure__:
        if isinstance(cell.cell_contents, list):
            return list(cell.cell_contents)
    raise AssertionError("no patch in the call")


def ref(name: str, weight: int, **extra: str) -> dict[str, Any]:
    return {"name": name, "port": 80, "weight": weight, **extra}


def router(refs: list[dict[str, Any]]) -> tuple[GatewayAPIRouter, Calls]:
    calls = Calls()
    return GatewayAPIRouter(View(refs), calls, "shop", "checkout", "v1", "v2"), calls


def test_backend_refs_with_the_default_and_explicit_core_service_match() -> None:
    r, _ = router([ref("v1", 90), ref("v2", 10, group="", kind="Service", namespace="shop")])
    assert r.read_weight() == 10


@pytest.mark.parametrize(
    ("decoy", "shown"),
    [
        ({"namespace": "other"}, "Service other/v2"),
        ({"kind": "ServiceImport", "group": "multicluster.x-k8s.io"}, "ServiceImport.multicluster"),
        ({"group": "example.com", "kind": "Service"}, "Service.example.com shop/v2"),
    ],
)
def test_a_backend_ref_of_another_kind_or_namespace_is_not_the_backend(
    decoy: dict[str, str], shown: str
) -> None:
    r, calls = router([ref("v1", 100), ref("v2", 0, **decoy)])
    with pytest.raises(RouterError) as e:
        r.read_weight()
    assert str(e.value).startswith(
        "HTTPRoute shop/checkout rule 0 has no backendRef to Service shop/v2 "
        "(spec.traffic.gatewayAPI.newBackend) (it has: Service shop/v1, "
    )
    assert shown in str(e.value)
    with pytest.raises(RouterError):
        asyncio.run(r.set_weight(10))
    assert calls.patches == []  # nothing written


def test_a_backend_named_twice_is_an_error_not_a_guess() -> None:
    r, calls = router([ref("v1", 100), ref("v2", 0), ref("v2", 0, namespace="shop")])
    with pytest.raises(RouterError) as e:
        asyncio.run(r.set_weight(10))
    assert str(e.value) == (
        "HTTPRoute shop/checkout rule 0 has 2 backendRefs to Service shop/v2 "
        "(spec.traffic.gatewayAPI.newBackend); Segue sets the weight of exactly one"
    )
    assert calls.patches == []


def test_the_write_is_guarded_by_every_identifying_field_it_matched() -> None:
    r, calls = router([ref("v1", 100, group="", kind="Service"), ref("v2", 0, namespace="shop")])
    asyncio.run(r.set_weight(10))
    (patch,) = calls.patches
    tests = {(op["path"], op["value"]) for op in patch if op["op"] == "test"}
    base = "/spec/rules/0/backendRefs"
    assert tests == {
        (f"{base}/0/name", "v1"),
        (f"{base}/0/group", ""),
        (f"{base}/0/kind", "Service"),
        (f"{base}/1/name", "v2"),
        (f"{base}/1/namespace", "shop"),
    }
    adds = [(op["path"], op["value"]) for op in patch if op["op"] == "add"]
    assert adds == [(f"{base}/0/weight", 90), (f"{base}/1/weight", 10)]


# -- segments -------------------------------------------------------------------------

SEG = Segment(header="x-customer-id", values=["acme", "globex"])


def _apply(route: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a JSON patch the way the API server does (test ops must hold)."""
    import jsonpatch

    return dict(jsonpatch.apply_patch(route, patch))


def test_a_segment_is_a_rule_of_its_own_written_with_the_weights() -> None:
    r, calls = router([ref("v1", 100), ref("v2", 0)])
    view = r._view
    assert isinstance(view, View)
    view.route["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": "/a"}}]
    asyncio.run(r.set_weight(10, SEG))
    (patch,) = calls.patches
    view.route = _apply(view.route, patch)
    rules = view.route["spec"]["rules"]
    assert [x["weight"] for x in rules[0]["backendRefs"]] == [90, 10]
    seg = rules[1]
    assert seg["name"] == "segue-segment"
    assert seg["backendRefs"] == [{"name": "v2", "port": 80}]
    assert seg["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/a"},
            "headers": [{"type": "Exact", "name": "x-customer-id", "value": v}],
        }
        for v in ("acme", "globex")
    ]
    assert r.read_weight() == 10 and r.read_segment() == SEG
    asyncio.run(r.set_weight(10, SEG))
    assert len(calls.patches) == 1  # already there: no write


def test_a_rollback_removes_the_segment_rule_in_the_same_patch() -> None:
    r, calls = router([ref("v1", 100), ref("v2", 0)])
    view = r._view
    assert isinstance(view, View)
    asyncio.run(r.set_weight(25, SEG))
    view.route = _apply(view.route, calls.patches[-1])
    asyncio.run(r.set_weight(0, None))
    assert len(calls.patches) == 2
    patch = calls.patches[-1]
    assert {"op": "test", "path": "/spec/rules/1/name", "value": "segue-segment"} in patch
    assert {"op": "remove", "path": "/spec/rules/1"} in patch
    view.route = _apply(view.route, patch)
    assert len(view.route["spec"]["rules"]) == 1
    assert (r.read_weight(), r.read_segment()) == (0, None)


def test_too_many_matches_for_gateway_api_is_a_clear_error() -> None:
    r, calls = router([ref("v1", 100), ref("v2", 0)])
    view = r._view
    assert isinstance(view, View)
    view.route["spec"]["rules"][0]["matches"] = [
        {"path": {"type": "PathPrefix", "value": f"/{i}"}} for i in range(3)
    ]
    many = Segment(header="x-customer-id", values=[f"c{i}" for i in range(32)])
    with pytest.raises(RouterError, match="more than Gateway API's 64"):
        asyncio.run(r.set_weight(10, many))
    assert calls.patches == []
