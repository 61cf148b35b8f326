"""Whether a primary and a canary Ingress are paired the way the Rollout says: what
ingress-nginx needs to split a path between them, checked on the watched summaries.

ingress-nginx merges a canary Ingress into the primary Ingress of the same ingress class that
serves the same host, path and path type; a canary path without such a primary path is
ignored. So the canary Ingress must route only to the new Service, every one of its paths must
be one the primary routes to the legacy Service, and every path the primary routes to the
legacy Service must be in the canary too (or the weight would not reach it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from segue.traffic.nginx.canary import CANARY, is_canary, key
from segue.traffic.nginx.plugin import CLASS_ANNOTATION

Json = dict[str, Any]
Route = tuple[str, str, str]  # host ("" for any), path, path type
DEFAULT_BACKEND: Final[Route] = ("", "", "")


def routes(summary: Json) -> dict[Route, str | None]:
    """Each host/path of an Ingress summary (and its default backend) with its backend
    Service; None for a resource backend. A path listed twice keeps its first backend."""
    spec = summary.get("spec") or {}
    out: dict[Route, str | None] = {}
    default = spec.get("defaultBackend")
    if isinstance(default, dict):
        out[DEFAULT_BACKEND] = default.get("service")
    for p in spec.get("paths") or []:
        out.setdefault((str(p["host"]), str(p["path"]), str(p["pathType"])), p.get("service"))
    return out


def describe(route: Route) -> str:
    if route == DEFAULT_BACKEND:
        return "the default backend"
    host, path, path_type = route
    return f"{host or '*'}{path} ({path_type})"


def annotations_of(summary: Json) -> Mapping[str, str]:
    found: Mapping[str, str] = (summary.get("metadata") or {}).get("annotations") or {}
    return found


def ingress_class(summary: Json) -> str | None:
    name = (summary.get("spec") or {}).get("ingressClassName")
    return str(name) if name else annotations_of(summary).get(CLASS_ANNOTATION)


@dataclass(frozen=True)
class Pairing:
    """The two Ingresses and two Services a Rollout names."""

    namespace: str
    primary: str
    canary: str
    legacy_service: str
    new_service: str
    prefix: str

    def _ingress(self, name: str, field: str) -> str:
        return f"Ingress {self.namespace}/{name} (spec.traffic.nginx.{field})"

    def _service(self, name: str | None) -> str:
        return "a resource backend" if name is None else f"Service {self.namespace}/{name}"

    def problem(self, primary: Json, canary: Json) -> str | None:
        """What keeps ingress-nginx from splitting traffic as the Rollout says, naming the
        object and the fix; None when the pair is right."""
        p = self._ingress(self.primary, "ingress")
        c = self._ingress(self.canary, "canaryIngress")
        annotation = key(self.prefix, CANARY)
        if is_canary(self.prefix, annotations_of(primary)):
            return (
                f'{p} is annotated {annotation}: "true": name the primary Ingress, the one '
                f"routing to Service {self.legacy_service}, in spec.traffic.nginx.ingress"
            )
        if not is_canary(self.prefix, annotations_of(canary)):
            return (
                f'{c} is not annotated {annotation}: "true": add it (ingress-nginx serves an '
                "Ingress without it as a second primary, and its admission webhook refuses "
                "one for hosts and paths another Ingress has)"
            )
        canary_routes = routes(canary)
        if not canary_routes:
            return (
                f"{c} routes nothing: give it the hosts and paths of Ingress "
                f"{self.namespace}/{self.primary}, with Service {self.new_service} as backend"
            )
        for route, service in canary_routes.items():
            if service != self.new_service:
                return (
                    f"{c} routes {describe(route)} to {self._service(service)}, but "
                    f"spec.traffic.nginx.newService is {self.new_service}: route every path of "
                    "the canary Ingress to the new version's Service"
                )
        classes = ingress_class(primary), ingress_class(canary)
        if classes[0] != classes[1]:
            return (
                f"{c} has ingress class {classes[1] or '(default)'} and {p} has "
                f"{classes[0] or '(default)'}: ingress-nginx pairs a canary Ingress only with a "
                "primary of its own class; give both the same ingressClassName"
            )
        primary_routes = routes(primary)
        for route in canary_routes:
            if route not in primary_routes:
                return (
                    f"{p} has no {describe(route)}, which {c} routes: ingress-nginx ignores a "
                    "canary path that no primary path matches (host, path and pathType); give "
                    "both Ingresses the same hosts and paths"
                )
            service = primary_routes[route]
            if service != self.legacy_service:
                return (
                    f"{p} routes {describe(route)} to {self._service(service)}, but "
                    f"spec.traffic.nginx.legacyService is {self.legacy_service}: name the "
                    "Service the primary Ingress routes to"
                )
        for route, service in primary_routes.items():
            if service == self.legacy_service and route not in canary_routes:
                return (
                    f"{c} has no {describe(route)}, which {p} routes to Service "
                    f"{self.legacy_service}: traffic there would stay on the legacy version "
                    "whatever the weight; add it to the canary Ingress"
                )
        return None
