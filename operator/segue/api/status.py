"""The Rollout's status: the operator's durable state and what users read.

Written only by the operator. Unknown fields are kept out of the model (kopf keeps its own
bookkeeping under ``status`` too).
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

from pydantic import Field

from segue.api.base import StatusModel, Timestamp
from segue.api.spec import OnFailure, RollbackMode

Phase = Literal[
    "Pending",
    "Waiting",
    "Progressing",
    "Paused",
    "AwaitingApproval",
    "Succeeded",
    "RollingBack",
    "RolledBack",
    "Failed",
]
PHASES: Final[tuple[Phase, ...]] = get_args(Phase)
PausedReason = Literal["Manual", "GateFailed", "NoData", "QueryError", "AnalysisUnavailable"]
Verdict = Literal["Pass", "Fail", "Inconclusive", "Error"]
ConditionStatus = Literal["True", "False", "Unknown"]

MAX_HISTORY: Final = 50
MAX_CONDITIONS: Final = 16
MAX_GATE_STATUSES: Final = 16


class Condition(StatusModel):
    """A kstatus-compatible condition."""

    type: str = Field(max_length=64)
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: Timestamp
    observed_generation: int | None = None


class GateStatus(StatusModel):
    """The latest verdict of one gate and its streaks."""

    name: str = Field(max_length=63)
    value: float | None = None
    legacy_value: float | None = None
    bound: str = Field("", description='Human-readable bound, e.g. "<= 0.05" or "<= 2x legacy".')
    verdict: Verdict | None = None
    consecutive_failures: int = 0
    consecutive_no_data: int = 0
    failure_limit: int | None = None
    on_failure: OnFailure | None = None
    last_evaluated: Timestamp | None = None
    message: str | None = None


class RollbackStatus(StatusModel):
    """The rollback in progress (or the last one, once RolledBack)."""

    mode: RollbackMode
    from_weight: int = Field(ge=0, le=100)
    started_at: Timestamp
    reason: str


class HistoryEntry(StatusModel):
    """One line of the audit trail. Gate fields carry the numbers behind a gate's action."""

    time: Timestamp
    step: int
    weight: int
    event: str
    reason: str | None = None
    actor: str | None = None
    gate: str | None = None
    value: float | None = None
    legacy_value: float | None = None
    bound: str | None = None


class RolloutStatus(StatusModel):
    phase: Phase | None = None
    step: int = Field(0, ge=0, description="Index of the current step of the expanded plan.")
    total_steps: int = Field(0, ge=0)
    weight: int = Field(0, ge=0, le=100, description="Weight last read back from the router.")
    target_weight: int = Field(0, ge=0, le=100, description="Weight last asked of the router.")
    legacy_replicas: int | None = Field(
        None,
        ge=0,
        description="The legacy Deployment's spec.replicas when the plan started; its share "
        "of traffic is judged against it (condition Degraded).",
    )
    observed_generation: int | None = None
    new_revision: str | None = None
    step_started_at: Timestamp | None = Field(
        None,
        description="When the current weight was confirmed or the current pause began.",
    )
    approved_step: int | None = Field(None, description="The current step, once approved.")
    paused_reason: PausedReason | None = None
    message: str | None = None
    rollback: RollbackStatus | None = None
    promoting: bool | None = None
    analysis_unreachable_since: Timestamp | None = None
    handled_annotations: dict[str, str] | None = Field(
        None,
        description="One-shot annotations already acted on and not yet seen removed.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    gates: list[GateStatus] = Field(
        default_factory=list,
        max_length=MAX_GATE_STATUSES,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    history: list[HistoryEntry] = Field(default_factory=list, max_length=MAX_HISTORY)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
