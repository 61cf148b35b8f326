"""Gateway API router: the weights of two backendRefs in one rule of an HTTPRoute.

The route is read from the watch stream. Only the two `weight` fields are written, by JSON
patch with the field manager "segue", guarded by `test` operations so a concurrent edit
that reorders the backends fails instead of moving the wrong weight. Everything else in the
route stays with whoever applied it. With ``require_managed`` the route must be labelled
``segue.dev/managed=true``, checked on the watched route and again by a `test` operation in
the same patch, so a label removed a moment ago still stops the write.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from segue import MANAGED_LABEL, MANAGED_VALUE, is_managed
from segue.traffic.base import (
    FIELD_MANAGER,
    Calls,
    ClusterView,
    Ref,
    RouterError,
    not_managed,
)

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"
KIND = "HTTPRoute"


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
        route = self._view.httproute(self.namespace, self.http_route)
        if not self.require_managed or route is None:
            return []
        if is_managed((route.get("metadata") or {}).get("labels")):
            return []
        return [(KIND, self.namespace, self.http_route)]

    def _route(self) -> dict[str, Any]:
        route = self._view.httproute(self.namespace, self.http_route)
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
        names = [r.get("name") for r in refs]
        missing = [b for b in (self.legacy_backend, self.new_backend) if b not in names]
        if missing:
            raise RouterError(
                f"{self._where} rule {self.rule_index} has no backendRef named "
                f"{', '.join(missing)} (it has: {', '.join(str(n) for n in names) or 'none'})"
            )
        return names.index(self.legacy_backend), names.index(self.new_backend), refs

    def read_weight(self) -> int:
        legacy_i, new_i, refs = self._locate(self._route())
        # Gateway API's default weight is 1 when the field is absent.
        legacy_w = int(refs[legacy_i].get("weight", 1))
        new_w = int(refs[new_i].get("weight", 1))
        if legacy_w + new_w == 0:
            return 0
        return round(100 * new_w / (legacy_w + new_w))

    async def set_weight(self, weight: int) -> None:
        if not 0 <= weight <= 100:
            raise ValueError(f"weight {weight} outside 0..100")
        if self.unmanaged():
            raise not_managed(KIND, self.namespace, self.http_route)
        legacy_i, new_i, refs = self._locate(self._route())
        if refs[legacy_i].get("weight") == 100 - weight and refs[new_i].get("weight") == weight:
            return  # already there: no write at all
        base = f"/spec/rules/{self.rule_index}/backendRefs"
        patch: list[dict[str, Any]] = []
        if self.require_managed:
            label = "/metadata/labels/" + MANAGED_LABEL.replace("~", "~0").replace("/", "~1")
            patch.append({"op": "test", "path": label, "value": MANAGED_VALUE})
        patch += [
            {"op": "test", "path": f"{base}/{legacy_i}/name", "value": self.legacy_backend},
            {"op": "test", "path": f"{base}/{new_i}/name", "value": self.new_backend},
            {"op": "add", "path": f"{base}/{legacy_i}/weight", "value": 100 - weight},
            {"op": "add", "path": f"{base}/{new_i}/weight", "value": weight},
        ]
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
