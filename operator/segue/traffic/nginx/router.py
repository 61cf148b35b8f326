"""NGINX Ingress router: the canary annotations of a canary Ingress that ingress-nginx pairs
with the primary Ingress.

You own both Ingresses: the primary routes the hosts and paths to the legacy Service, the
canary (annotated ``nginx.ingress.kubernetes.io/canary: "true"``) routes the same hosts and
paths to the new Service. Segue creates neither; it checks the pair on every read
(``pairing.py``) and writes only the canary Ingress's canary annotations (``canary.py``):
the weight, and for a segment a ``canary-by-header`` rule whose pattern matches exactly the
segment's values, which ingress-nginx honours before the weight. Both Ingresses are read from
the watch stream. A change is one JSON patch with the field manager "segue", guarded by a
`test` of the resourceVersion the checks were made on, so any edit in between fails the
write instead of being overwritten; a rollback sets the weight to 0 and removes the by-header
rule in that same patch. With ``require_managed`` the canary Ingress must be labelled
``segue.dev/managed=true``, checked on the watched Ingress and by a `test` in the patch.
"""

from __future__ import annotations

import re
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
from segue.traffic.nginx import canary
from segue.traffic.nginx.pairing import Pairing, annotations_of
from segue.traffic.nginx.plugin import (
    GROUP,
    KIND,
    PLURAL,
    SEGMENT_HEADER_PATTERN,
    VERSION,
    NginxSettings,
)

Json = dict[str, Any]
JSON_PATCH: Final = "application/json-patch+json"


def build(ctx: RouterContext, settings: NginxSettings) -> NginxRouter:
    return NginxRouter(
        ctx.view,
        ctx.calls,
        Pairing(
            ctx.namespace,
            settings.ingress,
            settings.canary(),
            settings.legacy_service,
            settings.new_service,
            settings.annotation_prefix,
        ),
        require_managed=ctx.require_managed,
    )


def _pointer(key: str) -> str:
    return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")


class NginxRouter:
    manages_capacity = False

    def __init__(
        self,
        view: ClusterView,
        calls: Calls,
        pairing: Pairing,
        *,
        require_managed: bool = False,
    ) -> None:
        self._view = view
        self._calls = calls
        self.pairing = pairing
        self.namespace = pairing.namespace
        self.require_managed = require_managed

    @property
    def _where(self) -> str:
        return f"Ingress {self.namespace}/{self.pairing.canary}"

    def watches(self) -> list[Ref]:
        return [
            (KIND, self.namespace, self.pairing.primary),
            (KIND, self.namespace, self.pairing.canary),
        ]

    def unmanaged(self) -> list[Ref]:
        return unmanaged_object(
            self._view, KIND, self.namespace, self.pairing.canary, self.require_managed
        )

    def _canary(self) -> Json:
        """The canary Ingress's summary, once the pair is as the Rollout says."""
        p = self.pairing
        primary = self._view.get(KIND, self.namespace, p.primary)
        if primary is None:
            raise RouterError(
                f"Ingress {self.namespace}/{p.primary} (spec.traffic.nginx.ingress) not found"
            )
        found = self._view.get(KIND, self.namespace, p.canary)
        if found is None:
            raise RouterError(
                f"{self._where} (spec.traffic.nginx.canaryIngress) not found: create it beside "
                f"Ingress {self.namespace}/{p.primary}, with the same hosts and paths routed to "
                f'Service {p.new_service} and the annotation {p.prefix}/canary: "true"'
            )
        problem = p.problem(primary, found)
        if problem is not None:
            raise RouterError(problem)
        return found

    def read_weight(self) -> int:
        return canary.weight_of(self.pairing.prefix, annotations_of(self._canary()))

    def read_segment(self) -> Segment | None:
        return canary.segment_of(self.pairing.prefix, annotations_of(self._canary()))

    async def set_weight(self, weight: int, segment: Segment | None = None) -> None:
        if not 0 <= weight <= 100:
            raise ValueError(f"weight {weight} outside 0..100")
        if segment is not None and not re.fullmatch(SEGMENT_HEADER_PATTERN, segment.header):
            # The spec refuses such a step (MSG_SEGMENT_HEADER); this is a second line.
            raise RouterError(
                f"setSegment.header {segment.header}: ingress-nginx matches only headers named "
                "with lower-case letters, digits and '-' (nginx drops the others by default); "
                f"name such a header to send a segment through {self._where}"
            )
        if self.unmanaged():
            raise not_managed(KIND, self.namespace, self.pairing.canary)
        found = self._canary()
        prefix = self.pairing.prefix
        current = canary.owned(prefix, annotations_of(found))
        want = canary.wanted(prefix, weight, segment)
        if current == want:
            return  # already there: no write at all
        version = (found.get("metadata") or {}).get("resourceVersion")
        if not version:
            raise RouterError(f"{self._where} has no resourceVersion to guard the write with")
        patch: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version}
        ]
        if self.require_managed:
            label = "/metadata/labels/" + MANAGED_LABEL.replace("~", "~0").replace("/", "~1")
            patch.append({"op": "test", "path": label, "value": MANAGED_VALUE})
        patch += [
            {"op": "add", "path": _pointer(k), "value": v}
            for k, v in want.items()
            if current.get(k) != v
        ]
        patch += [{"op": "remove", "path": _pointer(k)} for k in current if k not in want]
        await self._patch(patch)

    async def _patch(self, patch: list[dict[str, Any]]) -> None:
        name = self.pairing.canary
        try:
            updated = await self._calls.call(
                # The Ingress's own endpoint (/apis/networking.k8s.io/v1/...), through the
                # generic client, which returns the object as the server sends it.
                lambda api: client.CustomObjectsApi(api).patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    name,
                    patch,
                    field_manager=FIELD_MANAGER,
                    _content_type=JSON_PATCH,
                )
            )
        except ApiException as e:
            if e.status == 404:
                raise RouterError(f"{self._where} not found") from e
            if e.status in (409, 422):
                # A `test` failed: the Ingress changed since it was watched. The watch event
                # that changed it wakes the Rollout, which asks again on the new Ingress.
                raise RouterError(f"{self._where} changed while writing; retrying") from e
            raise
        if isinstance(updated, dict):
            self._view.put(KIND, updated)
