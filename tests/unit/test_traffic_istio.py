"""The Istio router against an in-memory VirtualService: a fake API server applies each JSON
patch (test operations included) to its copy, and the watched store sees the result. The
real API server with Istio's CRDs is in tests/e2e/test_rollout_istio.py."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import jsonpatch
import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from segue.api.routing import Segment
from segue.api.spec import Traffic
from segue.controller.store import Store
from segue.traffic.base import RouterError
from segue.traffic.istio.plugin import (
    KIND,
    MSG_DISTINCT_DESTINATIONS,
    MSG_NOT_SEGMENT_ROUTE,
    SEGMENT_ROUTE,
    IstioDestination,
    IstioSettings,
    virtual_service_summary,
)
from segue.traffic.istio.router import MAX_MATCHES, IstioRouter

Json = dict[str, Any]
NS = "shop"


def dest(host: str, weight: int | None = None, subset: str | None = None, **extra: Any) -> Json:
    out: Json = {"destination": {"host": host, **({"subset": subset} if subset else {})}}
    if weight is not None:
        out["weight"] = weight
    return {**out, **extra}


def vs(*http: Json, labels: dict[str, str] | None = None) -> Json:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": KIND,
        "metadata": {"namespace": NS, "name": "checkout", "resourceVersion": "1", "labels": labels},
        "spec": {"hosts": ["checkout"], "http": list(http)},
    }


def primary(*dests: Json, **extra: Any) -> Json:
    return {"name": "primary", "route": list(dests), **extra}


class Server:
    """Holds the whole object and applies JSON patches to it as the API server does."""

    def __init__(self, body: Json, store: Store) -> None:
        self.body = body
        self.store = store
        self.patches: list[list[Json]] = []
        store.put(KIND, copy.deepcopy(body))

    async def call(self, fn: Any) -> Any:
        patch = _patch_of(fn)
        self.patches.append(patch)
        try:
            updated = jsonpatch.apply_patch(self.body, patch)
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as e:
            raise ApiException(status=422, reason=str(e)) from e
        meta = updated["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.body = updated
        return copy.deepcopy(updated)

    def edit(self, body: Json) -> None:
        """Someone else's write, seen by the watch."""
        body["metadata"]["resourceVersion"] = str(int(self.body["metadata"]["resourceVersion"]) + 1)
        self.body = body
        self.store.put(KIND, copy.deepcopy(body))

    @property
    def http(self) -> list[Json]:
        routes: list[Json] = self.body["spec"]["http"]
        return routes


def _patch_of(fn: Any) -> list[Json]:
    for cell in fn.__closure__:
        if isinstance(cell.cell_contents, list):
            return list(cell.cell_contents)
    raise AssertionError("no patch in the call")


def router(
    body: Json,
    legacy: IstioDestination | None = None,
    new: IstioDestination | None = None,
    route_name: str | None = "primary",
    require_managed: bool = False,
) -> tuple[IstioRouter, Server]:
    store = Store()
    server = Server(body, store)
    r = IstioRouter(
        store,
        server,
        NS,
        "checkout",
        legacy or IstioDestination(host="checkout", subset="v1"),
        new or IstioDestination(host="checkout", subset="v2"),
        route_name,
        require_managed=require_managed,
    )
    return r, server


def split(legacy: int | None = 100, new: int | None = 0, **extra: Any) -> Json:
    return primary(dest("checkout", legacy, "v1"), dest("checkout", new, "v2"), **extra)


SEG = Segment(header="x-customer-id", values=["acme", "globex"])


# --- settings ----------------------------------------------------------------------------


def _traffic(**istio: Any) -> Json:
    return {
        "istio": {
            "virtualService": "checkout",
            "legacyDestination": {"host": "checkout", "subset": "v1"},
            "newDestination": {"host": "checkout", "subset": "v2"},
            **istio,
        }
    }


def test_settings_name_the_virtual_service_route_and_two_destinations() -> None:
    traffic = Traffic.model_validate(_traffic(routeName="primary"))
    key, settings = traffic.chosen()
    assert key == "istio"
    assert isinstance(settings, IstioSettings)
    assert settings.routing_object() == "VirtualService checkout"
    assert settings.new_destination == IstioDestination(host="checkout", subset="v2")
    # Host-level splitting: two Services, no subsets.
    Traffic.model_validate(
        _traffic(legacyDestination={"host": "checkout-v1"}, newDestination={"host": "checkout-v2"})
    )


@pytest.mark.parametrize(
    ("istio", "message"),
    [
        ({"newDestination": {"host": "checkout", "subset": "v1"}}, MSG_DISTINCT_DESTINATIONS),
        ({"routeName": SEGMENT_ROUTE}, MSG_NOT_SEGMENT_ROUTE),
        ({"routeName": "has space"}, "routeName"),
        ({"newDestination": {"host": "Checkout"}}, "host"),
        ({"newDestination": {"host": "checkout", "subset": "v_2"}}, "subset"),
        ({"newDestination": {"host": "checkout", "port": 80}}, "port"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(istio: Json, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        Traffic.model_validate(_traffic(**istio))
    assert message in str(e.value)


def test_the_summary_keeps_the_http_routes_and_the_managed_label_only() -> None:
    body = vs(split(), labels={"segue.dev/managed": "true", "team": "a"})
    body["spec"]["tcp"] = [{"route": []}]
    body["metadata"]["annotations"] = {"big": "x" * 1000}
    assert virtual_service_summary(body) == {
        "metadata": {"resourceVersion": "1", "labels": {"segue.dev/managed": "true"}},
        "spec": {"http": [split()]},
    }


# --- finding the route and its destinations ----------------------------------------------


def test_weights_are_read_from_the_named_route() -> None:
    other = {"name": "admin", "route": [dest("admin")]}
    r, _ = router(vs(other, split(75, 25)))
    assert r.read_weight() == 25
    assert r.read_segment() is None
    assert r.watches() == [(KIND, NS, "checkout")]


def test_without_a_route_name_the_only_http_route_is_weighed() -> None:
    unnamed = {"route": [dest("checkout", 40, "v1"), dest("checkout", 60, "v2")]}
    r, _ = router(vs(unnamed), route_name=None)
    assert r.read_weight() == 60
    r2, _ = router(vs(unnamed, {"name": "admin", "route": [dest("admin")]}), route_name=None)
    with pytest.raises(RouterError) as e:
        r2.read_weight()
    assert str(e.value) == (
        "VirtualService shop/checkout has 2 HTTP routes (it has: <unnamed 0>, admin); name the "
        "one to weigh in spec.traffic.istio.routeName"
    )


def test_an_absent_weight_is_zero_as_in_istio() -> None:
    r, _ = router(vs(split(None, None)))
    assert r.read_weight() == 0
    r, _ = router(vs(split(3, None)))
    assert r.read_weight() == 0
    r, _ = router(vs(split(1, 2)))
    assert r.read_weight() == 67


def test_a_short_host_is_the_service_in_the_namespace() -> None:
    fqdn = "checkout.shop.svc.cluster.local"
    route = primary(dest(fqdn, 90, "v1"), dest("checkout", 10, "v2"))
    r, _ = router(vs(route), legacy=IstioDestination(host="checkout", subset="v1"))
    assert r.read_weight() == 10
    r, _ = router(vs(route), new=IstioDestination(host=fqdn, subset="v2"))
    assert r.read_weight() == 10
    # The same name in another namespace is another Service.
    other = primary(dest("checkout.other.svc.cluster.local", 90, "v1"), dest("checkout", 10, "v2"))
    r, _ = router(vs(other))
    with pytest.raises(RouterError, match="has no destination host checkout subset v1"):
        r.read_weight()


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            {"name": "admin", "route": []},
            "VirtualService shop/checkout has no HTTP route named primary "
            "(spec.traffic.istio.routeName) (it has: admin)",
        ),
        (
            primary(dest("checkout", 100, "v1"), dest("checkout", 0, "v3")),
            "VirtualService shop/checkout HTTP route primary has no destination host checkout "
            "subset v2 (spec.traffic.istio.newDestination) (it has: host checkout subset v1, "
            "host checkout subset v3)",
        ),
        (
            primary(dest("checkout", 100, "v1"), dest("checkout", 0)),
            "VirtualService shop/checkout HTTP route primary has no destination host checkout "
            "subset v2 (spec.traffic.istio.newDestination) (it has: host checkout subset v1, "
            "host checkout)",
        ),
        (
            primary(dest("checkout", 50, "v1"), dest("checkout", 0, "v2"), dest("legacy", 50)),
            "VirtualService shop/checkout HTTP route primary routes to 3 destinations (it has: "
            "host checkout subset v1, host checkout subset v2, host legacy); Segue weighs a "
            "route with exactly two, spec.traffic.istio.legacyDestination and newDestination: "
            "remove the others",
        ),
        (
            primary(
                dest("checkout", 50, "v1"), dest("checkout", 0, "v2"), dest("checkout", 0, "v2")
            ),
            "VirtualService shop/checkout HTTP route primary has 2 destinations host checkout "
            "subset v2 (spec.traffic.istio.newDestination); Segue sets the weight of exactly one",
        ),
    ],
)
def test_a_route_that_does_not_fit_is_an_error_and_nothing_is_written(
    route: Json, message: str
) -> None:
    r, server = router(vs(route))
    with pytest.raises(RouterError) as e:
        r.read_weight()
    assert str(e.value) == message
    with pytest.raises(RouterError):
        asyncio.run(r.set_weight(10))
    assert server.patches == []


def test_two_spellings_of_one_destination_are_not_two_destinations() -> None:
    route = primary(dest("checkout", 100), dest("other", 0))
    r, _ = router(
        vs(route),
        legacy=IstioDestination(host="checkout"),
        new=IstioDestination(host="checkout.shop.svc.cluster.local"),
    )
    with pytest.raises(RouterError, match="name the same destination"):
        r.read_weight()


def test_a_missing_virtual_service_is_reported() -> None:
    r = IstioRouter(
        Store(),
        Server(vs(split()), Store()),
        NS,
        "gone",
        IstioDestination(host="a"),
        IstioDestination(host="b"),
    )
    with pytest.raises(RouterError, match="VirtualService shop/gone not found"):
        r.read_weight()


# --- writing weights ---------------------------------------------------------------------


def test_the_write_sets_both_weights_guarded_by_what_it_matched() -> None:
    r, server = router(vs({"name": "admin", "route": [dest("admin")]}, split()))
    asyncio.run(r.set_weight(10))
    (patch,) = server.patches
    base = "/spec/http/1"
    assert patch == [
        {"op": "test", "path": f"{base}/name", "value": "primary"},
        {"op": "test", "path": f"{base}/route/0/destination/host", "value": "checkout"},
        {"op": "test", "path": f"{base}/route/0/destination/subset", "value": "v1"},
        {"op": "test", "path": f"{base}/route/1/destination/host", "value": "checkout"},
        {"op": "test", "path": f"{base}/route/1/destination/subset", "value": "v2"},
        {"op": "add", "path": f"{base}/route/0/weight", "value": 90},
        {"op": "add", "path": f"{base}/route/1/weight", "value": 10},
    ]
    assert r.read_weight() == 10  # the response went into the store
    asyncio.run(r.set_weight(10))
    assert len(server.patches) == 1  # already there: no write


def test_a_concurrent_reorder_fails_the_write_instead_of_moving_the_wrong_weight() -> None:
    r, server = router(vs(split()))
    # The route changes after the watch saw it, and before the write.
    server.body = vs(primary(dest("checkout", 100, "v2"), dest("checkout", 0, "v1")))
    with pytest.raises(RouterError, match="changed while writing"):
        asyncio.run(r.set_weight(30))
    assert server.http[0]["route"][0]["weight"] == 100  # untouched


def test_with_require_managed_the_label_is_checked_and_tested_in_the_patch() -> None:
    r, server = router(vs(split()), require_managed=True)
    assert r.unmanaged() == [(KIND, NS, "checkout")]
    with pytest.raises(RouterError, match=r"is not labelled segue\.dev/managed=true"):
        asyncio.run(r.set_weight(10))
    assert server.patches == []

    r, server = router(vs(split(), labels={"segue.dev/managed": "true"}), require_managed=True)
    assert r.unmanaged() == []
    # Removed a moment ago: the watch has not told yet, the patch's test stops it.
    server.body["metadata"]["labels"] = {}
    with pytest.raises(RouterError, match="changed while writing"):
        asyncio.run(r.set_weight(10))
    assert server.patches[0][0] == {
        "op": "test",
        "path": "/metadata/labels/segue.dev~1managed",
        "value": "true",
    }


def test_weights_outside_0_to_100_are_a_bug() -> None:
    r, _ = router(vs(split()))
    with pytest.raises(ValueError):
        asyncio.run(r.set_weight(101))


# --- segments ----------------------------------------------------------------------------


def test_a_segment_is_a_route_before_the_weighted_one_to_the_new_destination() -> None:
    matched = split(
        match=[
            {"uri": {"prefix": "/cart"}},
            {"uri": {"prefix": "/pay"}, "headers": {"a": {"exact": "1"}}},
        ],
        timeout="5s",
    )
    admin = {"name": "admin", "route": [dest("admin")]}
    r, server = router(vs(admin, matched))
    asyncio.run(r.set_weight(10, SEG))
    assert len(server.patches) == 1  # weights and segment in one write
    assert [h.get("name") for h in server.http] == ["admin", SEGMENT_ROUTE, "primary"]
    segment = server.http[1]
    assert segment == {
        "name": SEGMENT_ROUTE,
        "timeout": "5s",
        "match": [
            {"uri": {"prefix": "/cart"}, "headers": {"x-customer-id": {"exact": "acme"}}},
            {"uri": {"prefix": "/cart"}, "headers": {"x-customer-id": {"exact": "globex"}}},
            {
                "uri": {"prefix": "/pay"},
                "headers": {"a": {"exact": "1"}, "x-customer-id": {"exact": "acme"}},
            },
            {
                "uri": {"prefix": "/pay"},
                "headers": {"a": {"exact": "1"}, "x-customer-id": {"exact": "globex"}},
            },
        ],
        "route": [{"destination": {"host": "checkout", "subset": "v2"}}],
    }
    assert [d["weight"] for d in server.http[2]["route"]] == [90, 10]
    assert r.read_weight() == 10
    assert r.read_segment() == SEG
    # Same values in another order: the same segment, nothing to write.
    asyncio.run(r.set_weight(10, Segment(header="x-customer-id", values=["globex", "acme"])))
    assert len(server.patches) == 1


def test_a_route_without_matches_gets_one_match_per_value() -> None:
    r, server = router(vs(split()))
    asyncio.run(r.set_weight(0, SEG))
    assert server.http[0]["match"] == [
        {"headers": {"x-customer-id": {"exact": "acme"}}},
        {"headers": {"x-customer-id": {"exact": "globex"}}},
    ]
    assert r.read_weight() == 0 and r.read_segment() == SEG


def test_changing_and_clearing_the_segment_keeps_it_one_write_each() -> None:
    r, server = router(vs(split()), route_name=None)
    asyncio.run(r.set_weight(10, SEG))
    bigger = Segment(header="x-customer-id", values=["acme", "globex", "initech"])
    asyncio.run(r.set_weight(10, bigger))  # only the segment changes
    assert r.read_segment() == bigger
    assert len(server.http) == 2
    assert server.patches[1][-2:] == [
        {"op": "test", "path": "/spec/http/0/name", "value": SEGMENT_ROUTE},
        {"op": "replace", "path": "/spec/http/0", "value": server.http[0]},
    ]
    # A rollback: weight 0 and no segment, in one write.
    asyncio.run(r.set_weight(0, None))
    assert len(server.patches) == 3
    assert server.http == [split(100, 0)]
    assert r.read_weight() == 0 and r.read_segment() is None


def test_a_segment_route_out_of_place_is_moved_before_the_weighted_route() -> None:
    r, server = router(vs(split(90, 10), {"name": "admin", "route": [dest("admin")]}))
    asyncio.run(r.set_weight(10, SEG))
    segment = server.http[0]
    # Someone moves it after the weighted route, where it would never match first.
    moved = copy.deepcopy(server.body)
    moved["spec"]["http"] = [server.http[1], server.http[2], segment]
    server.edit(moved)
    asyncio.run(r.set_weight(10, SEG))
    assert [h.get("name") for h in server.http] == [SEGMENT_ROUTE, "primary", "admin"]
    assert server.http[0] == segment


def test_a_stale_segment_route_is_rewritten() -> None:
    r, server = router(vs(split()))
    asyncio.run(r.set_weight(10, SEG))
    # The owner narrows the weighted route; the segment route must follow.
    edited = copy.deepcopy(server.body)
    edited["spec"]["http"][1]["match"] = [{"uri": {"prefix": "/v2"}}]
    server.edit(edited)
    asyncio.run(r.set_weight(10, SEG))
    assert len(server.patches) == 2
    assert all(m["uri"] == {"prefix": "/v2"} for m in server.http[0]["match"])
    assert r.read_segment() == SEG


@pytest.mark.parametrize(
    ("route", "segment", "message"),
    [
        (
            split(),
            Segment(header="method", values=["GET"]),
            "Istio ignores the header method in a match",
        ),
        (
            split(match=[{"headers": {"x-customer-id": {"prefix": "eu-"}}}]),
            SEG,
            "HTTP route primary already matches on the header x-customer-id",
        ),
        (
            split(match=[{"uri": {"prefix": f"/{i}"}} for i in range(MAX_MATCHES // 2 + 1)]),
            SEG,
            f"makes {MAX_MATCHES + 2} matches in the segue-segment route, more than "
            f"{MAX_MATCHES}: name fewer values in setSegment",
        ),
    ],
)
def test_a_segment_that_cannot_be_written_is_an_error(
    route: Json, segment: Segment, message: str
) -> None:
    r, server = router(vs(route))
    with pytest.raises(RouterError, match=message):
        asyncio.run(r.set_weight(10, segment))
    assert server.patches == []


def test_two_segment_routes_are_not_guessed_between() -> None:
    seg = {"name": SEGMENT_ROUTE, "route": [dest("checkout", None, "v2")]}
    r, server = router(vs(seg, seg, split()))
    with pytest.raises(RouterError, match="has 2 HTTP routes named segue-segment"):
        r.read_segment()
    with pytest.raises(RouterError):
        asyncio.run(r.set_weight(0))
    assert server.patches == []


def test_a_segment_route_segue_did_not_write_reads_as_none_and_is_replaced() -> None:
    foreign = {"name": SEGMENT_ROUTE, "route": [dest("checkout", None, "v2")]}
    r, server = router(vs(foreign, split()))
    assert r.read_segment() is None
    asyncio.run(r.set_weight(0, None))
    assert server.http == [split(100, 0)]
