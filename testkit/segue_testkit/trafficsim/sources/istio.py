"""The split of an Istio VirtualService (``--virtualservice``), read as Istio routes a request.

Istio takes the first HTTP route whose matches a request meets, then splits it over that
route's destinations by weight. The simulated requests are ``GET /`` carrying, with
customers, the header ``--customer-header`` (default ``x-customer-id``) set to the
customer's id. The weight is the new version's share of the route a request without that
header takes; the segment is the customers whose own request takes another route that sends
everything to the new version. A destination is the legacy or the new version by host (a
name without dots being the Service in the VirtualService's namespace) and subset.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from segue_testkit.trafficsim.sources.base import (
    ApiClientFactory,
    ArgumentAdder,
    SourceKind,
    Split,
    WeightSource,
    parse_ref,
)

Json = Mapping[str, Any]
PATH = "/"
METHOD = "GET"
SCHEME = "http"
# Match fields that say nothing about a plain in-mesh request (names and stats only).
NEUTRAL = frozenset({"name", "statPrefix"})


@dataclass(frozen=True)
class Destination:
    host: str
    subset: str | None


def parse_destination(raw: str, flag: str) -> Destination:
    """HOST or HOST/SUBSET."""
    host, _, subset = raw.partition("/")
    if not host or "/" in subset:
        raise argparse.ArgumentTypeError(f"{flag} must be HOST or HOST/SUBSET, got {raw!r}")
    return Destination(host, subset or None)


def _string_match(cond: Json, value: str | None) -> bool:
    """Istio's StringMatch (exact, prefix, regex over the whole value); ``{}`` checks only
    that the value is there."""
    if value is None:
        return False
    if "exact" in cond:
        return value == str(cond["exact"])
    if "prefix" in cond:
        return value.startswith(str(cond["prefix"]))
    if "regex" in cond:
        return re.fullmatch(str(cond["regex"]), value) is not None
    return True


def request_matches(match: Json, headers: Mapping[str, str]) -> bool:
    """Whether a ``GET /`` request with ``headers`` meets one HTTPMatchRequest."""
    unknown = set(match) - NEUTRAL - {"uri", "method", "scheme", "headers", "withoutHeaders"}
    if unknown:
        raise ValueError(
            f"the simulator models uri, method, scheme, headers and withoutHeaders matches, "
            f"not {', '.join(sorted(unknown))}"
        )
    for field, value in (("uri", PATH), ("method", METHOD), ("scheme", SCHEME)):
        if field in match and not _string_match(match[field], value):
            return False
    for name, cond in (match.get("headers") or {}).items():
        if not _string_match(cond or {}, headers.get(name)):
            return False
    for name, cond in (match.get("withoutHeaders") or {}).items():
        if _string_match(cond or {}, headers.get(name)):
            return False
    return True


def route_for(http: Sequence[Json], headers: Mapping[str, str]) -> Json | None:
    """The first HTTP route a request with ``headers`` meets (a route without matches meets
    every request); None when none does."""
    for route in http:
        matches = route.get("match") or [{}]
        if any(request_matches(m, headers) for m in matches):
            return route
    return None


def shares(
    route: Json, namespace: str, legacy: Destination, new: Destination
) -> tuple[float, float]:
    """The legacy and new weights of a route's destinations, as Istio reads them: one
    destination takes everything; with more, an absent weight is 0."""
    dests = route.get("route") or []

    def fqdn(host: str) -> str:
        return host if "." in host else f"{host}.{namespace}.svc.cluster.local"

    def which(dest: Json) -> Destination | None:
        d = dest.get("destination") or {}
        for candidate in (legacy, new):
            if (
                fqdn(str(d.get("host") or "")) == fqdn(candidate.host)
                and (d.get("subset") or None) == candidate.subset
            ):
                return candidate
        return None

    got = {legacy: 0.0, new: 0.0}
    for dest in dests:
        side = which(dest)
        if side is not None:
            got[side] += 1.0 if len(dests) == 1 else float(dest.get("weight") or 0)
    return got[legacy], got[new]


def split_of(
    vs: Json,
    legacy: Destination,
    new: Destination,
    customers: Sequence[str] = (),
    header: str = "x-customer-id",
) -> Split:
    namespace = str((vs.get("metadata") or {}).get("namespace") or "default")
    http: list[Json] = list((vs.get("spec") or {}).get("http") or [])
    default = route_for(http, {})
    weight: float | None = None
    if default is not None:
        legacy_w, new_w = shares(default, namespace, legacy, new)
        if legacy_w + new_w > 0:
            weight = 100.0 * new_w / (legacy_w + new_w)
    segment: set[str] = set()
    for customer in customers:
        route = route_for(http, {header: customer})
        if route is None or route is default:
            continue
        legacy_w, new_w = shares(route, namespace, legacy, new)
        if new_w > 0 and legacy_w == 0:
            segment.add(customer)
    return Split(weight, frozenset(segment))


class VirtualServiceWeight:
    def __init__(
        self,
        api_client: Any,
        ref: str,
        legacy: Destination,
        new: Destination,
        customers: Sequence[str],
        header: str,
    ) -> None:
        from kubernetes import client

        self.namespace, self.name = parse_ref(ref, "--virtualservice")
        self.legacy, self.new = legacy, new
        self.customers, self.header = tuple(customers), header
        self.api = client.CustomObjectsApi(api_client)

    def describe(self) -> str:
        return f"VirtualService {self.namespace}/{self.name}"

    def read(self) -> Split:
        vs = self.api.get_namespaced_custom_object(
            "networking.istio.io",
            "v1",
            self.namespace,
            "virtualservices",
            self.name,
            _request_timeout=2,
        )
        return split_of(cast(Json, vs), self.legacy, self.new, self.customers, self.header)


def _add_arguments(choose: ArgumentAdder, parser: ArgumentAdder) -> None:
    choose.add_argument(
        "--virtualservice", metavar="NS/NAME", help="read the split from this VirtualService"
    )
    parser.add_argument(
        "--legacy-destination",
        metavar="HOST[/SUBSET]",
        help="destination of legacy in the VirtualService",
    )
    parser.add_argument(
        "--new-destination", metavar="HOST[/SUBSET]", help="destination of new in it"
    )


def _check(args: argparse.Namespace) -> str | None:
    if not (args.legacy_destination and args.new_destination):
        return "--virtualservice needs --legacy-destination and --new-destination"
    try:
        parse_destination(args.legacy_destination, "--legacy-destination")
        parse_destination(args.new_destination, "--new-destination")
    except argparse.ArgumentTypeError as e:
        return str(e)
    return None


def _build(args: argparse.Namespace, api: ApiClientFactory) -> WeightSource:
    return VirtualServiceWeight(
        api(),
        args.virtualservice,
        parse_destination(args.legacy_destination, "--legacy-destination"),
        parse_destination(args.new_destination, "--new-destination"),
        tuple(args.customers or ()),
        args.customer_header,
    )


KIND = SourceKind(
    add_arguments=_add_arguments,
    chosen=lambda args: bool(args.virtualservice),
    check=_check,
    build=_build,
)
