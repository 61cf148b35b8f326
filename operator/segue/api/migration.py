"""The Migration: many Rollouts moved in ordered waves, with a rollback scope.

A Migration names its members (Rollouts in its namespace, by name or label selector) wave
by wave. Wave n+1 starts only when every member of wave n has Succeeded and the wave's bake
has passed (and, where asked, a person approved it). When a member rolls back, the
``rollbackScope`` says how far the rollback reaches: that member alone (later waves hold),
its whole wave, or every started wave, latest first. Every rollback is logged in the
status with an id, its scope, its trigger, the members affected, when it started and
ended, and its outcome.

Rollouts keep working on their own without a Migration; ``dependsOn`` stays the
lightweight form of ordering.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)

from segue.api.base import LabelName, ObjectName, SpecModel, StatusModel, Timestamp
from segue.api.duration import DurationBounds, DurationText
from segue.api.status import Condition, Label, Message, Reason

MIGRATION_KIND: Final = "Migration"
MIGRATION_PLURAL: Final = "migrations"
MIGRATION_SHORT_NAMES: Final = ["sgm"]

MAX_WAVES: Final = 16
MAX_WAVE_MEMBERS: Final = 64
MAX_SELECTOR_LABELS: Final = 16
MAX_ROLLBACK_LOG: Final = 20
MAX_MIGRATION_CONDITIONS: Final = 8

RollbackScope = Literal["service", "wave", "migration"]
MigrationPhase = Literal[
    "Pending",
    "Progressing",
    "AwaitingApproval",
    "Baking",
    "Held",
    "Succeeded",
    "RollingBack",
    "RolledBack",
    "Failed",
]
WavePhase = Literal[
    "Pending", "Progressing", "Baking", "Succeeded", "RollingBack", "RolledBack", "Held"
]
RollbackOutcome = Literal["InProgress", "Completed", "Failed"]

WAVE_BAKE_BOUNDS: Final = DurationBounds("spec.waves[*].bakeTime", "0s", "720h", " (30 days)")
MSG_WAVE_BAKE_BOUNDS: Final = WAVE_BAKE_BOUNDS.message
MSG_WAVE_MEMBERS: Final = "spec.waves[*]: name its Rollouts in rollouts, selector, or both"
MSG_UNIQUE_WAVES: Final = "spec.waves: wave names must be unique"
MSG_UNIQUE_MEMBERS: Final = (
    "spec.waves: a Rollout may be named once in a Migration (it belongs to one wave)"
)

WaveBake = Annotated[DurationText, AfterValidator(WAVE_BAKE_BOUNDS.check)]
SelectorValue = Annotated[str, StringConstraints(max_length=63)]
SelectorKey = Annotated[str, StringConstraints(min_length=1, max_length=317)]


def _validations(*rules: dict[str, str]) -> ConfigDict:
    cel: list[JsonValue] = [dict(r) for r in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": cel})


class RolloutSelector(SpecModel):
    """Rollouts of the Migration's namespace whose labels include all of these."""

    match_labels: dict[SelectorKey, SelectorValue] = Field(
        min_length=1, max_length=MAX_SELECTOR_LABELS
    )


class Wave(SpecModel):
    """One group of Rollouts that move together."""

    model_config = _validations(
        {"rule": "has(self.rollouts) || has(self.selector)", "message": MSG_WAVE_MEMBERS},
        WAVE_BAKE_BOUNDS.cel("bakeTime"),
    )

    name: LabelName = Field(description="Name of the wave, unique in the Migration.")
    rollouts: list[ObjectName] | None = Field(
        None,
        min_length=1,
        max_length=MAX_WAVE_MEMBERS,
        description="Rollouts in the Migration's namespace, by name.",
    )
    selector: RolloutSelector | None = Field(
        None, description="Rollouts in the Migration's namespace, by label."
    )
    bake_time: WaveBake | None = Field(
        None,
        description="After every member Succeeded, wait this long before the next wave: "
        "0s to 720h (30 days).",
    )
    approval: bool | None = Field(
        None,
        description="Wait for segue.dev/approve=<index of this wave> on the Migration "
        "before starting this wave.",
    )

    @model_validator(mode="after")
    def _members(self) -> Wave:
        if self.rollouts is None and self.selector is None:
            raise ValueError(MSG_WAVE_MEMBERS)
        return self


class MigrationSpec(SpecModel):
    """Move many Rollouts in ordered waves; roll back by scope."""

    model_config = _validations(
        {
            "rule": "self.waves.all(w, self.waves.exists_one(v, v.name == w.name))",
            "message": MSG_UNIQUE_WAVES,
            "fieldPath": ".waves",
        },
    )

    rollback_scope: RollbackScope = Field(
        "service",
        description="service: only the member that rolled back (later waves hold); wave: "
        "every member of its wave, Succeeded ones included; migration: every member of "
        "every started wave, latest wave first.",
    )
    waves: list[Wave] = Field(min_length=1, max_length=MAX_WAVES)

    @model_validator(mode="after")
    def _unique(self) -> MigrationSpec:
        names = [w.name for w in self.waves]
        if len(set(names)) != len(names):
            raise ValueError(MSG_UNIQUE_WAVES)
        members = [r for w in self.waves for r in w.rollouts or []]
        if len(set(members)) != len(members):
            raise ValueError(MSG_UNIQUE_MEMBERS)
        return self

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class MemberStatus(StatusModel):
    """One member Rollout as last seen."""

    name: str = Field(max_length=253)
    phase: str | None = Field(None, max_length=32)
    weight: int | None = Field(None, ge=0, le=100)


class WaveStatus(StatusModel):
    name: str = Field(max_length=63)
    phase: WavePhase = "Pending"
    started_at: Timestamp | None = None
    succeeded_at: Timestamp | None = None
    bake_until: Timestamp | None = None
    members: list[MemberStatus] = Field(default_factory=list, max_length=MAX_WAVE_MEMBERS * 2)


class RollbackTrigger(StatusModel):
    """What started a rollback: a member's gate (with its numbers) or a person."""

    rollout: str = Field(max_length=253)
    gate: Label | None = None
    value: float | None = None
    legacy_value: float | None = None
    bound: Label | None = None
    actor: Label | None = None
    reason: Reason | None = None


class RollbackRecord(StatusModel):
    """One entry of the rollback audit log."""

    id: str = Field(max_length=16, description="rb-<n>, n increasing per Migration.")
    scope: RollbackScope
    trigger: RollbackTrigger
    members: list[str] = Field(
        default_factory=list,
        max_length=MAX_WAVES * MAX_WAVE_MEMBERS,
        description="The affected Rollouts, in the order they are rolled back.",
    )
    initiated_at: Timestamp
    completed_at: Timestamp | None = None
    outcome: RollbackOutcome = "InProgress"
    message: Message | None = None


class MigrationStatus(StatusModel):
    phase: MigrationPhase | None = None
    wave: int = Field(0, ge=0, description="Index of the latest started wave.")
    observed_generation: int | None = None
    message: Message | None = None
    waves: list[WaveStatus] = Field(default_factory=list, max_length=MAX_WAVES)
    rollbacks: list[RollbackRecord] = Field(
        default_factory=list,
        max_length=MAX_ROLLBACK_LOG,
        description="The rollback audit log, newest last; the oldest entries are dropped.",
    )
    handled_annotations: dict[str, str] | None = Field(
        None, description="One-shot annotations already acted on and not yet seen removed."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_MIGRATION_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def to_wire(self) -> dict[str, Any]:
        wire = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        log: list[Any] = wire.get("rollbacks", [])
        if len(log) > MAX_ROLLBACK_LOG:
            wire["rollbacks"] = log[-MAX_ROLLBACK_LOG:]
        return wire
