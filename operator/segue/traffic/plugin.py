"""What a router plugin declares: its settings, the objects it watches, the permissions it
needs and the CRDs its tests install. Pure data, so the spec, the chart generator and the
cluster builder read it without importing any client code; the router itself (I/O) is
named by ``router`` and loaded only by the operator (``traffic/registry.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from segue.api.routing import RouterSettings

Json = dict[str, Any]


@dataclass(frozen=True)
class WatchedKind:
    """A kind the router reads from the watch stream. ``summary`` keeps only what the
    router reads (the store holds it per object); ``labels``: watch only objects carrying
    these labels, filtered by the API server (for kinds as common as ConfigMaps)."""

    kind: str
    group: str
    version: str
    plural: str
    summary: Callable[[Json], Json]
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Permission:
    """One RBAC rule the operator needs for this router, and why."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class CRDSource:
    """CRDs taken from a Go module (paths relative to the module's root), for tests."""

    module: str
    version: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class RouterPlugin:
    key: str  # the field under spec.traffic
    settings: type[RouterSettings]
    description: str  # one line, for kubectl explain and the docs
    router: str  # "module:function" building the Router (see traffic/registry.py)
    watches: tuple[WatchedKind, ...] = ()
    permissions: tuple[Permission, ...] = ()
    test_crds: tuple[CRDSource, ...] = ()


def metadata_summary(body: Json, *labels: str) -> Json:
    """The resourceVersion and the named labels: what every summary keeps of metadata."""
    meta = body.get("metadata") or {}
    kept = meta.get("labels") or {}
    return {
        "metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {k: v for k, v in kept.items() if k in labels},
        }
    }
