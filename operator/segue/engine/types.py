"""What the engine takes and returns: plain frozen values, no behaviour."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from segue.api.status import RolloutStatus, Verdict

Severity = Literal["rollback", "rollback-graceful", "pause"]
EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class GateVerdict:
    """One gate's outcome in one analysis round (same fields as the analysis package's)."""

    name: str
    verdict: Verdict
    value: float | None
    legacy_value: float | None
    bound: str
    severity: Severity
    failure_limit: int
    message: str


@dataclass(frozen=True)
class GateRound:
    """Every gate evaluated once. ``error``: the provider was unreachable for the round."""

    evaluated_at: datetime
    results: tuple[GateVerdict, ...]
    error: str | None = None


@dataclass(frozen=True)
class Observations:
    """Everything the controller read from the cluster for one decision.

    ``router_weight`` is the weight read back from the router (None: could not be read).
    ``annotations`` holds only ``segue.dev/*`` keys. ``missing`` names referenced objects
    that do not exist; ``dependencies_pending`` names dependsOn Rollouts not yet Succeeded.
    ``gates`` is the latest analysis round (None: no analysis, or no round yet).
    """

    now: datetime
    generation: int
    new_revision: str
    router_weight: int | None
    legacy_ready: int
    new_ready: int
    router_manages_capacity: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    missing: tuple[str, ...] = ()
    dependencies_pending: tuple[str, ...] = ()
    gates: GateRound | None = None


@dataclass(frozen=True)
class SetWeight:
    """Ask the router for this weight of the new version (0..100). Idempotent."""

    weight: int


@dataclass(frozen=True)
class EmitEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class ClearAnnotation:
    """Remove this annotation from the Rollout, after the status has been written."""

    key: str


Action = SetWeight | EmitEvent | ClearAnnotation


@dataclass(frozen=True)
class Decision:
    status: RolloutStatus
    actions: tuple[Action, ...]
    # Seconds until the engine next needs to be called (None: only on a change).
    requeue_after: float | None
