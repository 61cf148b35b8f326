"""The Rollout's status: the operator's durable state and what users read.

Written only by the operator. Unknown fields are kept out of the model (kopf keeps its own
bookkeeping under ``status`` too).

Texts that may carry user input (messages, reasons, bounds, annotation values) are capped in
UTF-8 bytes when parsed and again when serialized, so every writer gets the caps, including
code that assigns to a field; ``to_wire`` also bounds the history and the whole status in
bytes (:mod:`segue.api.text`). Caps truncate and never refuse: a status that failed to parse
would leave the Rollout without a state to act on.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, get_args

from pydantic import AfterValidator, Field, PlainSerializer

from segue.api.base import StatusModel, Timestamp
from segue.api.routing import Segment
from segue.api.spec import OnFailure, RollbackMode
from segue.api.text import (
    MAX_GATE_TEXT_BYTES,
    MAX_HISTORY_BYTES,
    MAX_LABEL_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_REASON_BYTES,
    MAX_STATUS_BYTES,
    annotation_mark,
    cap,
    capper,
    utf8,
    wire_size,
)

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
MAX_HANDLED_ANNOTATIONS: Final = 8
MAX_ANNOTATION_KEY_BYTES: Final = 128


def _capped(max_bytes: int) -> tuple[AfterValidator, PlainSerializer]:
    fn = capper(max_bytes)
    return AfterValidator(fn), PlainSerializer(fn, return_type=str)


Message = Annotated[str, *_capped(MAX_MESSAGE_BYTES)]
Reason = Annotated[str, *_capped(MAX_REASON_BYTES)]
GateText = Annotated[str, *_capped(MAX_GATE_TEXT_BYTES)]
Label = Annotated[str, *_capped(MAX_LABEL_BYTES)]


def _handled(value: dict[str, str] | None) -> dict[str, str] | None:
    """Values as :func:`annotation_mark`; at most MAX_HANDLED_ANNOTATIONS keys of a plausible
    length (Segue's keys are short; a longer one is none of them)."""
    if value is None:
        return None
    kept = [
        (key, annotation_mark(mark))
        for key, mark in value.items()
        if len(utf8(key)) <= MAX_ANNOTATION_KEY_BYTES
    ]
    return dict(kept[:MAX_HANDLED_ANNOTATIONS])


HandledAnnotations = Annotated[
    dict[str, str] | None, AfterValidator(_handled), PlainSerializer(_handled)
]


class Condition(StatusModel):
    """A kstatus-compatible condition."""

    type: str = Field(max_length=64)
    status: ConditionStatus
    reason: Label
    message: Message = ""
    last_transition_time: Timestamp
    observed_generation: int | None = None


class GateStatus(StatusModel):
    """The latest verdict of one gate and its streaks."""

    name: str = Field(max_length=63)
    value: float | None = None
    legacy_value: float | None = None
    bound: GateText = Field(
        "", description='Human-readable bound, e.g. "<= 0.05" or "<= 2x legacy".'
    )
    verdict: Verdict | None = None
    consecutive_failures: int = 0
    consecutive_no_data: int = 0
    failure_limit: int | None = None
    on_failure: OnFailure | None = None
    last_evaluated: Timestamp | None = None
    message: GateText | None = None


class RollbackStatus(StatusModel):
    """The rollback in progress (or the last one, once RolledBack)."""

    mode: RollbackMode
    from_weight: int = Field(ge=0, le=100)
    started_at: Timestamp
    reason: Reason


class HistoryEntry(StatusModel):
    """One line of the audit trail. Gate fields carry the numbers behind a gate's action."""

    time: Timestamp
    step: int
    weight: int
    event: Label
    reason: Reason | None = None
    actor: Label | None = None
    gate: Label | None = None
    value: float | None = None
    legacy_value: float | None = None
    bound: GateText | None = None


class RolloutStatus(StatusModel):
    phase: Phase | None = None
    step: int = Field(0, ge=0, description="Index of the current step of the expanded plan.")
    total_steps: int = Field(0, ge=0)
    weight: int = Field(0, ge=0, le=100, description="Weight last read back from the router.")
    target_weight: int = Field(0, ge=0, le=100, description="Weight last asked of the router.")
    segment: Segment | None = Field(
        None,
        description="Segment last asked of the router (a setSegment step); cleared at 100% "
        "and by a rollback.",
    )
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
    bake_until: Timestamp | None = Field(
        None,
        description="With spec.bakeTime: when the bake at 100% ends (set once the plan "
        "reaches 100%, so a restart neither shortens nor restarts it).",
    )
    paused_reason: PausedReason | None = None
    message: Message | None = None
    rollback: RollbackStatus | None = None
    promoting: bool | None = None
    analysis_unreachable_since: Timestamp | None = None
    plan_digest: str | None = Field(
        None,
        max_length=64,
        description="Digest of spec.steps, risk, hold and analysis as last seen; an edit "
        "made after traffic moved is recorded in history (PlanChanged).",
    )
    handled_annotations: HandledAnnotations = Field(
        None,
        description="One-shot annotations already acted on and not yet seen removed; values "
        "over 256 bytes as sha256: and a digest prefix.",
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
        """The status as written to the API server: every text capped, the history at most
        MAX_HISTORY_BYTES and the whole below MAX_STATUS_BYTES (as JSON)."""
        wire = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        _fit_history(wire, MAX_HISTORY_BYTES)
        if wire_size(wire) >= MAX_STATUS_BYTES:
            _shrink(wire)
        return wire


def _fit_history(wire: dict[str, Any], max_bytes: int) -> None:
    """Drop the oldest history entries until the serialized history fits."""
    history: list[Any] = wire.get("history", [])
    sizes = [wire_size(entry) for entry in history]
    # json.dumps separates list items with ", ".
    total = 2 + sum(sizes) + 2 * max(0, len(sizes) - 1)
    drop = 0
    while drop < len(sizes) and total > max_bytes:
        total -= sizes[drop] + (2 if drop < len(sizes) - 1 else 0)
        drop += 1
    if drop:
        wire["history"] = history[drop:]


# Free texts, outermost first: (path to a dict or a list of dicts, key).
_TEXTS: Final = (
    ((), "message"),
    (("rollback",), "reason"),
    (("conditions",), "message"),
    (("conditions",), "reason"),
    (("gates",), "message"),
    (("gates",), "bound"),
    (("history",), "reason"),
    (("history",), "bound"),
    (("history",), "actor"),
)


def _shrink(wire: dict[str, Any]) -> None:
    """Last resort when the per-field caps still add up to too much (many long texts of
    characters JSON escapes): shorter texts, then no history. Never touches what the engine
    compares (handled annotations, revision, phase, numbers)."""
    for limit in (256, 64, 16):
        for path, key in _TEXTS:
            node: Any = wire
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            for item in node if isinstance(node, list) else [node]:
                if isinstance(item, dict) and isinstance(item.get(key), str):
                    item[key] = cap(item[key], limit)
        if wire_size(wire) < MAX_STATUS_BYTES:
            return
    _fit_history(wire, 0)
