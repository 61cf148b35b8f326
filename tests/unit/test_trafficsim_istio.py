"""The simulator's reading of an Istio VirtualService: first matching HTTP route, weights of
its destinations, and the customers pinned to the new version by a route of their own."""

from __future__ import annotations

from typing import Any

import pytest

from segue_testkit.trafficsim.cli import parse_args
from segue_testkit.trafficsim.sources import Split
from segue_testkit.trafficsim.sources.istio import (
    Destination,
    parse_destination,
    request_matches,
    route_for,
    split_of,
)

V1 = Destination("shop", "v1")
V2 = Destination("shop", "v2")


def dest(host: str, subset: str | None = None, weight: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": host}}
    if subset:
        d["destination"]["subset"] = subset
    if weight is not None:
        d["weight"] = weight
    return d


def vs(*http: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": "t", "name": "shop"}, "spec": {"http": list(http)}}


def weighted(legacy: int | None, new: int | None, **extra: Any) -> dict[str, Any]:
    return {
        "name": "primary",
        "route": [dest("shop", "v1", legacy), dest("shop", "v2", new)],
        **extra,
    }


def pinned(*customers: str) -> dict[str, Any]:
    return {
        "name": "pinned",
        "match": [{"headers": {"x-customer-id": {"exact": c}}} for c in customers],
        "route": [dest("shop", "v2")],
    }


def test_the_weight_is_the_new_share_of_the_route_taken() -> None:
    assert split_of(vs(weighted(75, 25)), V1, V2) == Split(25.0)
    assert split_of(vs(weighted(100, None)), V1, V2) == Split(0.0)
    assert split_of(vs(weighted(None, None)), V1, V2) == Split(None)


def test_one_destination_takes_everything_whatever_its_weight() -> None:
    only_new = {"route": [dest("shop", "v2", 0)]}
    assert split_of(vs(only_new), V1, V2) == Split(100.0)


def test_hosts_compare_as_istio_resolves_short_names() -> None:
    route = {"route": [dest("shop.t.svc.cluster.local", "v1", 60), dest("shop", "v2", 40)]}
    assert split_of(vs(route), V1, V2) == Split(40.0)
    elsewhere = {"route": [dest("shop.other.svc.cluster.local", "v1", 60), dest("shop", "v2", 40)]}
    assert split_of(vs(elsewhere), V1, V2) == Split(100.0)


def test_customers_with_a_route_of_their_own_to_new_are_the_segment() -> None:
    customers = ("acme", "globex", "initech")
    split = split_of(vs(pinned("acme", "globex"), weighted(90, 10)), V1, V2, customers)
    assert split == Split(10.0, frozenset({"acme", "globex"}))
    # The same route after the weighted one never matches first: no segment.
    late = split_of(vs(weighted(90, 10), pinned("acme")), V1, V2, customers)
    assert late == Split(10.0)


def test_a_route_of_their_own_to_legacy_is_not_a_segment() -> None:
    to_legacy = {**pinned("acme"), "route": [dest("shop", "v1")]}
    assert split_of(vs(to_legacy, weighted(50, 50)), V1, V2, ("acme",)) == Split(50.0)


@pytest.mark.parametrize(
    ("match", "headers", "expected"),
    [
        ({}, {}, True),
        ({"uri": {"prefix": "/"}}, {}, True),
        ({"uri": {"prefix": "/api"}}, {}, False),
        ({"uri": {"exact": "/"}, "method": {"exact": "GET"}}, {}, True),
        ({"method": {"regex": "P.*"}}, {}, False),
        ({"headers": {"x-customer-id": {"exact": "acme"}}}, {"x-customer-id": "acme"}, True),
        ({"headers": {"x-customer-id": {"prefix": "ac"}}}, {"x-customer-id": "acme"}, True),
        ({"headers": {"x-customer-id": {"regex": "a.*e"}}}, {"x-customer-id": "acme"}, True),
        ({"headers": {"x-customer-id": {"regex": "cm"}}}, {"x-customer-id": "acme"}, False),
        ({"headers": {"x-customer-id": {}}}, {}, False),
        ({"withoutHeaders": {"x-customer-id": {}}}, {"x-customer-id": "acme"}, False),
        ({"withoutHeaders": {"x-customer-id": {}}}, {}, True),
    ],
)
def test_matches_as_istio_reads_them(match: Any, headers: Any, expected: bool) -> None:
    assert request_matches(match, headers) is expected


def test_a_match_the_simulator_does_not_model_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="not sourceLabels"):
        request_matches({"sourceLabels": {"app": "x"}}, {})


def test_no_matching_route_routes_nothing() -> None:
    only_api = weighted(50, 50, match=[{"uri": {"prefix": "/api"}}])
    assert route_for([only_api], {}) is None
    assert split_of(vs(only_api), V1, V2) == Split(None)


def test_the_command_line_chooses_the_virtual_service_source() -> None:
    base = ["--app", "shop", "--legacy-version", "v1", "--new-version", "v2"]
    args = parse_args(
        [*base, "--virtualservice", "t/shop", "--legacy-destination", "shop/v1",
         "--new-destination", "shop/v2", "--customers", "acme,globex"]
    )  # fmt: skip
    assert args.virtualservice == "t/shop" and args.customer_header == "x-customer-id"
    assert parse_destination("shop-v2", "--new-destination") == Destination("shop-v2", None)
    with pytest.raises(SystemExit):
        parse_args([*base, "--virtualservice", "t/shop", "--legacy-destination", "shop/v1"])
    with pytest.raises(SystemExit):
        parse_args(
            [*base, "--virtualservice", "t/shop", "--legacy-destination", "a/b/c",
             "--new-destination", "shop/v2"]
        )  # fmt: skip
