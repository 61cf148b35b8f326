"""Istio router: the weights of two destinations in one HTTP route of a VirtualService, and
a segment route of Segue's own.

The VirtualService is read from the watch stream. The weighted route is the HTTP route named
``routeName`` (``spec.http[].name``), or the only HTTP route when it is unset; it must route
to exactly the two destinations, each matched by host and subset. Only their two `weight`
fields are written, by JSON patch with the field manager "segue", guarded by `test`
operations (the route's name, each destination's host and subset) so a concurrent edit that
reorders routes or destinations fails instead of moving the wrong weight.

A segment is one more HTTP route, named ``segue-segment`` and placed just before the weighted
route: Istio evaluates HTTP routes in order and the first match wins. It is a copy of the
weighted route whose matches also require the segment's header (one ``exact`` match per
value, as many copies of each match as there are values) and whose only destination is the
new version. It is added, changed and removed in the same patch as the weights. With
``require_managed`` the VirtualService must be labelled ``segue.dev/managed=true``, checked
on the watched object and again by a `test` operation in the same patch.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Final

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from segue import MANAGED_LABEL, MANAGED_VALUE
from segue.api.routing import Segment
from segue.traffic.base import (
    FIELD_MANAGER,
    Calls,
    ClusterView,
    Ref,
    RouterContext,
    RouterError,
    not_managed,
    unmanaged_object,
)
from segue.traffic.istio.plugin import (
    GROUP,
    KIND,
    PLURAL,
    SEGMENT_ROUTE,
    VERSION,
    IstioDestination,
    IstioSettings,
)

Json = dict[str, Any]

# Matches in the segment route: the weighted route's matches times the segment's values.
MAX_MATCHES: Final = 64
# Istio ignores these keys in a match's headers: a segment on one would match every request.
IGNORED_HEADERS: Final = frozenset({"uri", "scheme", "method", "authority"})
CLUSTER_SUFFIX: Final = "svc.cluster.local"


def build(ctx: RouterContext, settings: IstioSettings) -> IstioRouter:
    return IstioRouter(
        ctx.view,
        ctx.calls,
        ctx.namespace,
        settings.virtual_service,
        settings.legacy_destination,
        settings.new_destination,
        settings.route_name,
        require_managed=ctx.require_managed,
    )


@dataclass(frozen=True)
class Located:
    """The weighted HTTP route and its two destinations, by index."""

    index: int
    route: Json
    legacy: int
    new: int

    @property
    def destinations(self) -> list[Json]:
        found: list[Json] = self.route.get("route") or []
        return found


class IstioRouter:
    manages_capacity = False

    def __init__(
        self,
        view: ClusterView,
        calls: Calls,
        namespace: str,
        virtual_service: str,
        legacy: IstioDestination,
        new: IstioDestination,
        route_name: str | None = None,
        *,
        require_managed: bool = False,
    ) -> None:
        self._view = view
        self._calls = calls
        self.namespace = namespace
        self.virtual_service = virtual_service
        self.legacy = legacy
        self.new = new
        self.route_name = route_name
        self.require_managed = require_managed

    @property
    def _where(self) -> str:
        return f"VirtualService {self.namespace}/{self.virtual_service}"

    def watches(self) -> list[Ref]:
        return [(KIND, self.namespace, self.virtual_service)]

    def unmanaged(self) -> list[Ref]:
        return unmanaged_object(
            self._view, KIND, self.namespace, self.virtual_service, self.require_managed
        )

    # -- reading ----------------------------------------------------------------------

    def _vs(self) -> Json:
        vs = self._view.get(KIND, self.namespace, self.virtual_service)
        if vs is None:
            raise RouterError(f"{self._where} not found")
        return vs

    @staticmethod
    def _route_label(index: int, route: Json) -> str:
        name = route.get("name")
        return f"HTTP route {name}" if name else f"HTTP route {index}"

    def _locate(self, vs: Json) -> Located:
        http: list[Json] = (vs.get("spec") or {}).get("http") or []
        names = ", ".join(str(r.get("name") or f"<unnamed {i}>") for i, r in enumerate(http))
        if self.route_name is not None:
            found = [i for i, r in enumerate(http) if r.get("name") == self.route_name]
            if not found:
                raise RouterError(
                    f"{self._where} has no HTTP route named {self.route_name} "
                    f"(spec.traffic.istio.routeName) (it has: {names or 'none'})"
                )
            if len(found) > 1:
                raise RouterError(
                    f"{self._where} has {len(found)} HTTP routes named {self.route_name} "
                    "(spec.traffic.istio.routeName); give them distinct names"
                )
        else:
            found = [i for i, r in enumerate(http) if r.get("name") != SEGMENT_ROUTE]
            if len(found) != 1:
                raise RouterError(
                    f"{self._where} has {len(found)} HTTP routes (it has: {names or 'none'}); "
                    "name the one to weigh in spec.traffic.istio.routeName"
                )
        index = found[0]
        route = http[index]
        dests: list[Json] = route.get("route") or []
        where = f"{self._where} {self._route_label(index, route)}"
        legacy = self._index(where, dests, self.legacy, "legacyDestination")
        new = self._index(where, dests, self.new, "newDestination")
        if legacy == new:
            raise RouterError(
                f"{where}: spec.traffic.istio.legacyDestination and newDestination name the "
                f"same destination ({self._list([dests[new]])}); give each version its own "
                "host or subset"
            )
        if len(dests) != 2:
            raise RouterError(
                f"{where} routes to {len(dests)} "
                f"destinations (it has: {self._list(dests)}); Segue weighs a route with "
                "exactly two, spec.traffic.istio.legacyDestination and newDestination: "
                "remove the others"
            )
        return Located(index, route, legacy, new)

    def _index(self, where: str, dests: list[Json], want: IstioDestination, field: str) -> int:
        """The one destination of the route that is ``want`` (host and subset)."""
        found = [i for i, d in enumerate(dests) if self._is(d.get("destination") or {}, want)]
        if len(found) == 1:
            return found[0]
        target = f"{self._show(want.host, want.subset)} (spec.traffic.istio.{field})"
        if found:
            raise RouterError(
                f"{where} has {len(found)} destinations {target}; Segue sets the weight of "
                "exactly one"
            )
        raise RouterError(f"{where} has no destination {target} (it has: {self._list(dests)})")

    def _is(self, dest: Json, want: IstioDestination) -> bool:
        return (
            self._fqdn(str(dest.get("host") or "")) == self._fqdn(want.host)
            and (dest.get("subset") or None) == want.subset
        )

    def _fqdn(self, host: str) -> str:
        """Istio reads a host without dots as a Service in the VirtualService's namespace."""
        return host if "." in host else f"{host}.{self.namespace}.{CLUSTER_SUFFIX}"

    @staticmethod
    def _show(host: object, subset: object) -> str:
        return f"host {host} subset {subset}" if subset else f"host {host}"

    def _list(self, dests: list[Json]) -> str:
        shown = [
            self._show(
                (d.get("destination") or {}).get("host"), (d.get("destination") or {}).get("subset")
            )
            for d in dests
        ]
        return ", ".join(shown) or "none"

    def read_weight(self) -> int:
        at = self._locate(self._vs())
        # Istio: with more than one destination, an absent weight is 0.
        legacy_w = int(at.destinations[at.legacy].get("weight") or 0)
        new_w = int(at.destinations[at.new].get("weight") or 0)
        if legacy_w + new_w <= 0:
            return 0
        return round(100 * new_w / (legacy_w + new_w))

    def read_segment(self) -> Segment | None:
        vs = self._vs()
        at = self._locate(vs)
        found = self._segment_route(vs)
        if found is None:
            return None
        return _parse_segment(found[1], at.route)

    def _segment_route(self, vs: Json) -> tuple[int, Json] | None:
        http: list[Json] = (vs.get("spec") or {}).get("http") or []
        found = [(i, r) for i, r in enumerate(http) if r.get("name") == SEGMENT_ROUTE]
        if len(found) > 1:
            raise RouterError(
                f"{self._where} has {len(found)} HTTP routes named {SEGMENT_ROUTE}; Segue "
                "writes one: delete the others"
            )
        return found[0] if found else None

    # -- writing ----------------------------------------------------------------------

    def _segment_body(self, at: Located, seg: Segment) -> Json:
        """The segment route: the weighted route, its matches narrowed to the segment's
        header values, all of it to the new destination."""
        label = f"{self._where} {self._route_label(at.index, at.route)}"
        if seg.header in IGNORED_HEADERS:
            raise RouterError(
                f"{self._where}: Istio ignores the header {seg.header} in a match, so a "
                "segment on it would take every request; name another header in setSegment"
            )
        base: list[Json] = at.route.get("match") or [{}]
        for m in base:
            if seg.header in (m.get("headers") or {}):
                raise RouterError(
                    f"{label} already matches on the header {seg.header}; a segment on it "
                    "would catch requests this route does not: name another header in "
                    "setSegment"
                )
        matches: list[Json] = []
        for m in base:
            for value in sorted(seg.values):  # one order: the same segment, the same route
                match = copy.deepcopy(m)
                match["headers"] = {**(match.get("headers") or {}), seg.header: {"exact": value}}
                matches.append(match)
        if len(matches) > MAX_MATCHES:
            raise RouterError(
                f"{label} has {len(base)} matches; with {len(seg.values)} segment values that "
                f"makes {len(matches)} matches in the {SEGMENT_ROUTE} route, more than "
                f"{MAX_MATCHES}: name fewer values in setSegment"
            )
        new = {k: v for k, v in at.destinations[at.new].items() if k != "weight"}
        rest = {k: v for k, v in at.route.items() if k not in ("name", "match", "route")}
        return {**rest, "name": SEGMENT_ROUTE, "match": matches, "route": [new]}

    def _segment_ops(self, vs: Json, at: Located, body: Json | None) -> list[Json]:
        """Add, replace, move or remove the segment route so that it is ``body`` (None:
        none) just before the weighted route; each guarded by the segment route's name.
        Empty when it is there already."""
        found = self._segment_route(vs)
        if found is None:
            if body is None:
                return []
            return [{"op": "add", "path": f"/spec/http/{at.index}", "value": body}]
        index, current = found
        if body is not None and index == at.index - 1 and current == body:
            return []
        path = f"/spec/http/{index}"
        ops: list[Json] = [{"op": "test", "path": f"{path}/name", "value": SEGMENT_ROUTE}]
        if body is None:
            return [*ops, {"op": "remove", "path": path}]
        if index == at.index - 1:
            return [*ops, {"op": "replace", "path": path, "value": body}]
        # Anywhere else it would come too late or catch other routes' requests: move it.
        target = at.index - 1 if index < at.index else at.index
        return [
            *ops,
            {"op": "remove", "path": path},
            {"op": "add", "path": f"/spec/http/{target}", "value": body},
        ]

    async def set_weight(self, weight: int, segment: Segment | None = None) -> None:
        if not 0 <= weight <= 100:
            raise ValueError(f"weight {weight} outside 0..100")
        if self.unmanaged():
            raise not_managed(KIND, self.namespace, self.virtual_service)
        vs = self._vs()
        at = self._locate(vs)
        body = None if segment is None else self._segment_body(at, segment)
        segment_ops = self._segment_ops(vs, at, body)
        dests = at.destinations
        if (
            dests[at.legacy].get("weight") == 100 - weight
            and dests[at.new].get("weight") == weight
            and not segment_ops
        ):
            return  # already there: no write at all
        base = f"/spec/http/{at.index}"
        patch: list[Json] = []
        if self.require_managed:
            label = "/metadata/labels/" + MANAGED_LABEL.replace("~", "~0").replace("/", "~1")
            patch.append({"op": "test", "path": label, "value": MANAGED_VALUE})
        if at.route.get("name"):
            patch.append({"op": "test", "path": f"{base}/name", "value": at.route["name"]})
        patch += [
            *_guard(f"{base}/route/{at.legacy}", dests[at.legacy]),
            *_guard(f"{base}/route/{at.new}", dests[at.new]),
            {"op": "add", "path": f"{base}/route/{at.legacy}/weight", "value": 100 - weight},
            {"op": "add", "path": f"{base}/route/{at.new}/weight", "value": weight},
            *segment_ops,
        ]
        try:
            updated = await self._calls.call(
                lambda api: client.CustomObjectsApi(api).patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    self.virtual_service,
                    patch,
                    field_manager=FIELD_MANAGER,
                    # The client defaults to a merge patch for custom objects.
                    _content_type="application/json-patch+json",
                )
            )
        except ApiException as e:
            if e.status == 404:
                raise RouterError(f"{self._where} not found") from e
            if e.status == 422:
                # A `test` failed: the VirtualService changed since it was watched. The watch
                # event that changed it wakes the Rollout, which asks again on the new shape.
                raise RouterError(
                    f"{self._where} changed while writing, or its API refused the patch "
                    f"({_reason(e)}); retrying"
                ) from e
            raise
        if isinstance(updated, dict):
            self._view.put(KIND, updated)


def _guard(path: str, dest: Json) -> list[Json]:
    """`test` ops: the route destination at ``path`` is still the one that was matched."""
    d = dest.get("destination") or {}
    return [
        {"op": "test", "path": f"{path}/destination/{key}", "value": d[key]}
        for key in ("host", "subset")
        if key in d
    ]


def _parse_segment(route: Json, weighted: Json) -> Segment | None:
    """The segment a ``segue-segment`` route sends to the new version: the one header that
    every match tests for an exact value and the weighted route's matches do not test."""
    matches: list[Json] = route.get("match") or []
    base = {h for m in weighted.get("match") or [] for h in m.get("headers") or {}}
    candidates: set[str] | None = None
    for m in matches:
        exact = {
            str(h)
            for h, cond in (m.get("headers") or {}).items()
            if isinstance(cond, dict) and "exact" in cond and h not in base
        }
        candidates = exact if candidates is None else candidates & exact
    if not candidates or len(candidates) != 1:
        return None  # not a route Segue wrote: the next write replaces it
    (header,) = candidates
    values = list(dict.fromkeys(str(m["headers"][header]["exact"]) for m in matches))
    try:
        return Segment(header=header, values=values)
    except ValueError:
        return None


def _reason(e: ApiException) -> str:
    """The API server's message for a refused request, short."""
    try:
        message = json.loads(e.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or e.reason or e.status)[:300]
