"""What the engine takes and returns: plain frozen values, no behaviour."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from segue.api.phases import EventType as EventType  # re-exported for the engine's users
from segue.api.routing import Segment
from segue.api.status import GateStatus, PausedReason, Phase, RolloutStatus

ObjectRef = tuple[str, str, str]  # (kind, namespace, name)


@dataclass(frozen=True)
class GateRound:
    """Every gate evaluated once, each result the API's ``GateStatus`` as the metric
    provider returned it: value, legacy value, bound, verdict, failure limit, onFailure and
    message (its streaks are the engine's to count). ``error``: the provider was
    unreachable for the round. ``evaluated_at`` identifies the round: a round not newer
    than a gate's ``lastEvaluated`` in status was already counted and never counts again."""

    evaluated_at: datetime
    results: tuple[GateStatus, ...]
    error: str | None = None


@dataclass(frozen=True)
class Observations:
    """Everything the controller read from the cluster for one decision.

    - ``router_weight``: the weight read back from the router (None: could not be read).
    - ``legacy_ready``, ``new_ready``: ready pods (0 when the Deployment is missing);
      ``legacy_desired``: the legacy Deployment's ``spec.replicas`` (recorded in
      ``status.legacyReplicas`` when the plan starts; its share of traffic is judged
      against it).
    - ``router_manages_capacity``: the router realises a weight by scaling (replicas).
    - ``router_segment``: the segment the router sends to the new version right now.
    - ``annotations``: only ``segue.dev/*`` keys.
    - ``missing``: human descriptions of referenced objects that do not exist, for
      messages; ``new_missing``, ``legacy_missing`` and ``router_missing`` say which. A
      description without any of the flags stalls like a missing routing object.
    - ``unmanaged``: (kind, namespace, name) of each object the router writes to that
      exists but lacks the ``segue.dev/managed=true`` label the operator requires (empty
      unless it requires it). No weight moves while there is one.
    - ``dependencies_pending``: dependsOn Rollouts not yet Succeeded.
    - ``dependencies_rolled_back``: what holds the start because it rolled back, each a
      description naming it and its phase (``Rollout catalog is RolledBack``); a dependsOn
      Rollout that is RolledBack or Failed, or whatever else orders this Rollout (a
      Migration's rolled-back wave). Until it is retried and succeeds the Rollout is
      Stalled (reason ``DependencyRolledBack``), not merely Waiting.
    - ``migration_waiting``: the Rollout is a member of a Migration whose wave has not
      started (a message naming both): it stays Waiting (``WaitingForMigration``).
    - ``gates``: the latest analysis round (None: no analysis, or no round yet).
    - ``deleting``: the Rollout has a ``deletionTimestamp`` (``deleting_since``); the
      engine decides when its finalizer is released (``ReleaseFinalizer``).
    """

    now: datetime
    generation: int
    new_revision: str
    router_weight: int | None
    legacy_ready: int
    new_ready: int
    router_manages_capacity: bool = False
    # The segment the router reads back (None: none, or the router has no segments).
    router_segment: Segment | None = field(default=None, hash=False)
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    missing: tuple[str, ...] = ()
    new_missing: bool = False
    legacy_missing: bool = False
    router_missing: bool = False
    legacy_desired: int = 0
    unmanaged: tuple[ObjectRef, ...] = ()
    dependencies_pending: tuple[str, ...] = ()
    dependencies_rolled_back: tuple[str, ...] = ()
    migration_waiting: str | None = None
    gates: GateRound | None = None
    deleting: bool = False
    deleting_since: datetime | None = None

    @property
    def any_missing(self) -> bool:
        """A referenced object is missing."""
        return bool(self.missing) or self.new_missing or self.legacy_missing or self.router_missing


@dataclass(frozen=True)
class SetWeight:
    """Ask the router for this weight of the new version (0..100) and this segment (None:
    no segment rule), in one write. Idempotent."""

    weight: int
    segment: Segment | None = field(default=None, hash=False)


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes Event that is not a phase change (those are ``PhaseChanged``)."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class PhaseChanged:
    """The Rollout entered ``new`` (or, staying Paused, changed its pause reason).

    The one record of a transition: the controller turns it into an Event (reason: the
    phase; type: ``segue.api.phases.event_type``), metrics and notifications read it
    instead of re-deriving "why" from history. ``verdict`` is the gate behind the change,
    if any; ``actor`` who or what caused it (``segue``, ``gate <name>``, an annotation).
    """

    old: Phase | None
    new: Phase
    paused_reason: PausedReason | None
    message: str
    actor: str
    verdict: GateStatus | None
    at: datetime


@dataclass(frozen=True)
class ClearAnnotation:
    """Remove this annotation from the Rollout, after the status has been written."""

    key: str


@dataclass(frozen=True)
class ReleaseFinalizer:
    """The Rollout is being deleted and nothing is left to undo (or the deadline passed):
    remove Segue's finalizer, last of all actions."""


Action = SetWeight | EmitEvent | PhaseChanged | ClearAnnotation | ReleaseFinalizer


@dataclass(frozen=True)
class Decision:
    """The new status, the actions to apply in order, and when to decide again.

    ``requeue_after`` carries only time-based wake-ups (a hold's end, a graceful ramp's
    next step, the unreachable limit, the deletion deadline, the analysis interval while
    waiting on a round). Waits that a watch event ends (the router catching up, pods
    becoming ready, a dependency succeeding, a missing object coming back) give None.
    """

    status: RolloutStatus
    actions: tuple[Action, ...]
    requeue_after: float | None
