"""What the operator knows of the cluster, kept current by watch streams.

kopf watches Rollouts, Deployments and HTTPRoutes in the operator's scope. Each kind has a
kopf index handler, so kopf finishes the initial listing of every kind before any Rollout
is handled (a Rollout is never judged against a Deployment that merely has not been listed
yet); the handlers keep a small summary per object here, not the whole object. A pass reads
from this store and makes no GET request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segue import MANAGED_LABEL
from segue.workloads.deployments import DeploymentState

Json = dict[str, Any]
Key = tuple[str, str]


def resource_version(obj: Json) -> int | None:
    """The object's resourceVersion as a number, when it is one (etcd revisions are)."""
    value = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def newer(candidate: Json, current: Json | None) -> bool:
    """Whether ``candidate`` is at least as new as ``current``. Our own writes return the
    object before its watch event arrives; an event older than what a write returned must
    not roll the cached copy back."""
    if current is None:
        return True
    a, b = resource_version(candidate), resource_version(current)
    if a is None or b is None:
        return True
    return a >= b


def route_summary(body: Json) -> Json:
    """The parts of an HTTPRoute a router reads: each rule's backendRefs, and the one label
    that opts the route in to Segue's writes (``segue.dev/managed``)."""
    rules = (body.get("spec") or {}).get("rules") or []
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    return {
        "metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {k: v for k, v in labels.items() if k == MANAGED_LABEL},
        },
        "spec": {"rules": [{"backendRefs": list(r.get("backendRefs") or [])} for r in rules]},
    }


@dataclass
class Store:
    deployments: dict[Key, DeploymentState] = field(default_factory=dict)
    httproutes: dict[Key, Json] = field(default_factory=dict)
    rollout_phases: dict[Key, str | None] = field(default_factory=dict)

    # -- ClusterView (what routers and the reconciler read) ---------------------------

    def deployment(self, namespace: str, name: str) -> DeploymentState | None:
        return self.deployments.get((namespace, name))

    def httproute(self, namespace: str, name: str) -> Json | None:
        return self.httproutes.get((namespace, name))

    def rollout_phase(self, namespace: str, name: str) -> tuple[bool, str | None]:
        key = (namespace, name)
        return key in self.rollout_phases, self.rollout_phases.get(key)

    # -- fed by the watch handlers ----------------------------------------------------

    def put(self, kind: str, body: Json) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if kind == "Deployment":
            self.deployments[key] = DeploymentState.from_body(body, self.deployments.get(key))
        elif kind == "HTTPRoute":
            if newer(body, self.httproutes.get(key)):
                self.httproutes[key] = route_summary(body)
        elif kind == "Rollout":
            self.rollout_phases[key] = (body.get("status") or {}).get("phase")

    def drop(self, kind: str, namespace: str, name: str) -> None:
        key = (namespace, name)
        if kind == "Deployment":
            self.deployments.pop(key, None)
        elif kind == "HTTPRoute":
            self.httproutes.pop(key, None)
        elif kind == "Rollout":
            self.rollout_phases.pop(key, None)
