"""The small protocol every router implements, what it may read and write, and its errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from kubernetes import client

from segue import FIELD_MANAGER as FIELD_MANAGER
from segue import MANAGED_LABEL, MANAGED_VALUE, is_managed
from segue.api.routing import Segment
from segue.api.spec import Workload
from segue.workloads.deployments import DeploymentState

Json = dict[str, Any]
T = TypeVar("T")


class RouterError(Exception):
    """The routing object cannot be read or written as configured (a user-fixable problem)."""


class ClusterView(Protocol):
    """The watched state of the objects Rollouts reference (no request per read)."""

    def deployment(self, namespace: str, name: str) -> DeploymentState | None: ...

    def get(self, kind: str, namespace: str, name: str) -> Json | None:
        """The summary of a watched object of a router's kind (see ``WatchedKind``)."""
        ...

    def put(self, kind: str, body: Json) -> None:
        """A write's response: the object as it is now, ahead of its watch event (a
        Deployment's scale subresource answers with its Scale, kind ``Scale``). A watch event
        older than what a response brought does not take it back."""
        ...


def not_managed(kind: str, namespace: str, name: str) -> RouterError:
    """The refusal to write to an object that is not opted in."""
    return RouterError(
        f"{kind} {namespace}/{name} is not labelled {MANAGED_LABEL}={MANAGED_VALUE}: "
        "Segue does not write to it"
    )


def unmanaged_object(
    view: ClusterView, kind: str, namespace: str, name: str, require_managed: bool
) -> list[Ref]:
    """``[(kind, namespace, name)]`` when the operator requires the opt-in label and the
    watched object exists without it; else ``[]`` (what a one-object router's
    ``unmanaged`` returns)."""
    found = view.get(kind, namespace, name)
    if not require_managed or found is None:
        return []
    if is_managed((found.get("metadata") or {}).get("labels")):
        return []
    return [(kind, namespace, name)]


class Calls(Protocol):
    """Runs one blocking client call on the operator's Kubernetes pool, with a timeout."""

    async def call(self, fn: Callable[[client.ApiClient], T]) -> T: ...


Ref = tuple[str, str, str]  # (kind, namespace, name) of a watched object


class Router(Protocol):
    """Moves traffic between the legacy and the new version.

    Weights are the new version's share in percent (0..100). `read_weight` reads the
    watched state, so it costs no request; `set_weight` is idempotent: calling it again with
    the same weight writes nothing. A router that realises the weight by scaling pods sets
    `manages_capacity`, so the engine leaves readiness ordering to it. `watches` names the
    objects whose changes must wake the Rollout.

    Built with ``require_managed`` (the operator's ``--require-managed-label``), a router
    writes only to objects labelled ``segue.dev/managed=true``: `unmanaged` names the
    objects it would write to that exist and lack the label (the engine refuses to move
    traffic while there are any), and `set_weight` raises RouterError rather than write to
    one, as a second line of defence.
    """

    manages_capacity: bool

    def watches(self) -> list[Ref]: ...

    def unmanaged(self) -> list[Ref]:
        """The objects this router writes to that exist but are not opted in (always empty
        unless built with ``require_managed``)."""
        ...

    def read_weight(self) -> int:
        """The weight in effect right now; RouterError when the object is missing or does
        not match the spec."""
        ...

    def read_segment(self) -> Segment | None:
        """The segment sent to the new version right now (None: none); RouterError like
        read_weight. A router without segment support always returns None."""
        ...

    async def set_weight(self, weight: int, segment: Segment | None = None) -> None:
        """Ask for `weight` and `segment` (None: no segment rule) in one write; read_weight
        and read_segment tell when it has taken effect. A rollback clears the segment in
        the same write that moves the weight."""
        ...


@dataclass(frozen=True)
class RouterContext:
    """What every router is built with: the watched state, the Kubernetes pool, the
    Rollout's namespace and Deployments, whether only opted-in objects may be written, and
    the weight its status records as asked of the router (``status.targetWeight``; None
    when nothing was asked yet): a router that cannot read an exact weight back (replicas)
    confirms against it."""

    view: ClusterView
    calls: Calls
    namespace: str
    legacy: Workload
    new: Workload
    require_managed: bool = False
    asked: int | None = None
