"""Gateway API router: the weights of two backendRefs in one rule of an HTTPRoute, and a
segment rule of Segue's own.

The route is read from the watch stream. Only the two `weight` fields are written, by JSON
patch with the field manager "segue", guarded by `test` operations so a concurrent edit
that reorders the backends fails instead of moving the wrong weight. Everything else in the
route stays with whoever applied it. A segment is one more rule, named ``segue-segment``
and appended after the others: a copy of the routed rule whose matches also require the
segment's header (one Exact header match per value, Gateway API's core support) and whose
only backend is the new version. Gateway API prefers the match with more header matches,
so those requests go to the new version whatever the weights; the rule is added, changed
and removed in the same patch as the weights. With ``require_managed`` the route must be labelled
``segue.dev/managed=true``, checked on the watched route and again by a `test` operation in
the same patch, so a label removed a moment ago still stops the write.
"""

from __future__ import annotations

import copy
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
from segue.traffic.gatewayapi.plugin import GROUP, KIND, PLURAL, VERSION, GatewayAPISettings

SEGMENT_RULE: Final = "segue-segment"
# Gateway API allows at most 64 matches in a rule.
MAX_MATCHES: Final = 64


def build(ctx: RouterContext, settings: GatewayAPISettings) -> GatewayAPIRouter:
    return GatewayAPIRouter(
        ctx.view,
        ctx.calls,
        ctx.namespace,
        settings.http_route,
        settings.legacy_backend,
        settings.new_backend,
        settings.rule_index,
        require_managed=ctx.require_managed,
    )


class GatewayAPIRouter:
    manages_capacity = False

    def __init__(
        self,
        view: ClusterView,
        calls: Calls,
        namespace: str,
        http_route: str,
        legacy_backend: str,
        new_backend: str,
        rule_index: int = 0,
        *,
        require_managed: bool = False,
    ) -> None:
        self._view = view
        self._calls = calls
        self.namespace = namespace
        self.http_route = http_route
        self.legacy_backend = legacy_backend
        self.new_backend = new_backend
        self.rule_index = rule_index
        self.require_managed = require_managed

    @property
    def _where(self) -> str:
        return f"HTTPRoute {self.namespace}/{self.http_route}"

    def watches(self) -> list[Ref]:
        return [(KIND, self.namespace, self.http_route)]

    def unmanaged(self) -> list[Ref]:
        return unmanaged_object(
            self._view, KIND, self.namespace, self.http_route, self.require_managed
        )

    def _route(self) -> dict[str, Any]:
        route = self._view.get(KIND, self.namespace, self.http_route)
        if route is None:
            raise RouterError(f"{self._where} not found")
        return route

    def _locate(self, route: dict[str, Any]) -> tuple[int, int, list[dict[str, Any]]]:
        rules = route.get("spec", {}).get("rules") or []
        if self.rule_index >= len(rules):
            raise RouterError(
                f"{self._where} has {len(rules)} rule(s); spec.traffic.gatewayAPI.ruleIndex "
                f"is {self.rule_index}"
            )
        refs: list[dict[str, Any]] = rules[self.rule_index].get("backendRefs") or []
        legacy_i = self._index(refs, self.legacy_backend, "legacyBackend")
        new_i = self._index(refs, self.new_backend, "newBackend")
        return legacy_i, new_i, refs

    def _index(self, refs: list[dict[str, Any]], name: str, field: str) -> int:
        """The one backendRef of the rule that is Service ``name`` in the route's namespace.

        Group, kind and namespace count as Gateway API defaults them (core group, Service,
        the route's namespace): a backendRef to another kind or namespace with the same
        name is not the backend the Rollout means."""
        found = [i for i, ref in enumerate(refs) if self._is_service(ref, name)]
        if len(found) == 1:
            return found[0]
        target = f"Service {self.namespace}/{name} (spec.traffic.gatewayAPI.{field})"
        rule = f"{self._where} rule {self.rule_index}"
        if found:
            raise RouterError(
                f"{rule} has {len(found)} backendRefs to {target}; Segue sets the weight of "
                "exactly one"
            )
        has = ", ".join(self._describe(r) for r in refs) or "none"
        raise RouterError(f"{rule} has no backendRef to {target} (it has: {has})")

    def _is_service(self, ref: dict[str, Any], name: str) -> bool:
        return (
            ref.get("name") == name
            and (ref.get("group") or "") == ""
            and (ref.get("kind") or "Service") == "Service"
            and (ref.get("namespace") or self.namespace) == self.namespace
        )

    def _describe(self, ref: dict[str, Any]) -> str:
        group = ref.get("group") or ""
        kind = ref.get("kind") or "Service"
        what = f"{kind}.{group}" if group else kind
        return f"{what} {ref.get('namespace') or self.namespace}/{ref.get('name')}"

    def read_weight(self) -> int:
        legacy_i, new_i, refs = self._locate(self._route())
        # Gateway API's default weight is 1 when the field is absent.
        legacy_w = int(refs[legacy_i].get("weight", 1))
        new_w = int(refs[new_i].get("weight", 1))
        if legacy_w + new_w == 0:
            return 0
        return round(100 * new_w / (legacy_w + new_w))

    def read_segment(self) -> Segment | None:
        route = self._route()
        found = _segment_rule(route)
        if found is None:
            return None
        header: str | None = None
        values: list[str] = []
        for match in found[1].get("matches") or []:
            for h in match.get("headers") or []:
                header = str(h.get("name", "")).lower()
                value = str(h.get("value", ""))
                if value not in values:
                    values.append(value)
        if header is None or not values:
            return None
        try:
            return Segment(header=header, values=values)
        except ValueError:
            return None  # not a rule Segue wrote: the next write replaces it

    def _segment_body(self, route: dict[str, Any], new_ref: dict[str, Any], seg: Segment) -> Any:
        rule = route["spec"]["rules"][self.rule_index]
        base_matches = rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
        matches = []
        for m in base_matches:
            for value in seg.values:
                match = copy.deepcopy(m)
                match["headers"] = [
                    *(h for h in match.get("headers") or [] if h.get("name") != seg.header),
                    {"type": "Exact", "name": seg.header, "value": value},
                ]
                matches.append(match)
        if len(matches) > MAX_MATCHES:
            raise RouterError(
                f"{self._where} rule {self.rule_index} has {len(base_matches)} matches; with "
                f"{len(seg.values)} segment values that makes {len(matches)} matches, more "
                f"than Gateway API's {MAX_MATCHES}: name fewer values in setSegment"
            )
        segment_ref = {k: v for k, v in new_ref.items() if k != "weight"}
        out = {k: v for k, v in rule.items() if k not in ("name", "matches", "backendRefs")}
        return {**out, "name": SEGMENT_RULE, "matches": matches, "backendRefs": [segment_ref]}

    async def set_weight(self, weight: int, segment: Segment | None = None) -> None:
        if not 0 <= weight <= 100:
            raise ValueError(f"weight {weight} outside 0..100")
        if self.unmanaged():
            raise not_managed(KIND, self.namespace, self.http_route)
        route = self._route()
        legacy_i, new_i, refs = self._locate(route)
        current = self.read_segment()
        same_segment = (current.key() if current else None) == (segment.key() if segment else None)
        if (
            refs[legacy_i].get("weight") == 100 - weight
            and refs[new_i].get("weight") == weight
            and same_segment
        ):
            return  # already there: no write at all
        base = f"/spec/rules/{self.rule_index}/backendRefs"
        patch: list[dict[str, Any]] = []
        if self.require_managed:
            label = "/metadata/labels/" + MANAGED_LABEL.replace("~", "~0").replace("/", "~1")
            patch.append({"op": "test", "path": label, "value": MANAGED_VALUE})
        patch += [
            *_guard(f"{base}/{legacy_i}", refs[legacy_i]),
            *_guard(f"{base}/{new_i}", refs[new_i]),
            {"op": "add", "path": f"{base}/{legacy_i}/weight", "value": 100 - weight},
            {"op": "add", "path": f"{base}/{new_i}/weight", "value": weight},
        ]
        if not same_segment:
            patch += self._segment_ops(route, refs[new_i], segment)
        try:
            updated = await self._calls.call(
                lambda api: client.CustomObjectsApi(api).patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    self.http_route,
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
                # A `test` failed: the route changed since it was watched. The watch event
                # that changed it wakes the Rollout, which asks again on the new shape.
                raise RouterError(f"{self._where} changed while writing; retrying") from e
            raise
        if isinstance(updated, dict):
            self._view.put(KIND, updated)

    def _segment_ops(
        self, route: dict[str, Any], new_ref: dict[str, Any], segment: Segment | None
    ) -> list[dict[str, Any]]:
        """Add, replace or remove the segment rule, each guarded by the rule's name."""
        found = _segment_rule(route)
        if found is not None and found[0] == self.rule_index:
            raise RouterError(
                f"{self._where}: spec.traffic.gatewayAPI.ruleIndex {self.rule_index} names "
                f"Segue's own {SEGMENT_RULE} rule; point it at the rule that routes the service"
            )
        body = None if segment is None else self._segment_body(route, new_ref, segment)
        if found is None:
            return [] if body is None else [{"op": "add", "path": "/spec/rules/-", "value": body}]
        path = f"/spec/rules/{found[0]}"
        guard = {"op": "test", "path": f"{path}/name", "value": SEGMENT_RULE}
        if body is None:
            return [guard, {"op": "remove", "path": path}]
        return [guard, {"op": "replace", "path": path, "value": body}]


def _segment_rule(route: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    for i, rule in enumerate(route.get("spec", {}).get("rules") or []):
        if rule.get("name") == SEGMENT_RULE:
            return i, rule
    return None


def _guard(path: str, ref: dict[str, Any]) -> list[dict[str, Any]]:
    """`test` ops: the backendRef at ``path`` is still the one that was matched."""
    return [
        {"op": "test", "path": f"{path}/{key}", "value": ref[key]}
        for key in ("name", "namespace", "group", "kind")
        if key in ref
    ]
