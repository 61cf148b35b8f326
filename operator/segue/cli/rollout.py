"""A Rollout as the API server returns it, parsed once into what the commands and views read.

Parsing is forgiving on purpose: a Rollout written by a newer operator (an unknown status
field, a phase this CLI does not know) must still be shown, not crash the tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from segue.api import RolloutSpec, RolloutStatus, Step, parse_duration
from segue.api import plan as expand_plan
from segue.api.base import format_timestamp


@dataclass(frozen=True)
class RolloutView:
    namespace: str
    name: str
    status: RolloutStatus
    spec: RolloutSpec | None = None
    spec_error: str | None = None
    status_error: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    generation: int | None = None
    created: datetime | None = None
    resource_version: str | None = None
    plan: tuple[Step, ...] = ()
    raw_phase: str | None = None  # as written, even if this CLI does not know the phase

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> RolloutView:
        meta: Mapping[str, Any] = obj.get("metadata") or {}
        spec: RolloutSpec | None = None
        spec_error: str | None = None
        try:
            spec = RolloutSpec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            spec_error = first_error(e)
        raw_status: Mapping[str, Any] = obj.get("status") or {}
        status, status_error = parse_leniently(RolloutStatus, raw_status)
        raw_phase = raw_status.get("phase")
        created = meta.get("creationTimestamp")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            status=status,
            spec=spec,
            spec_error=spec_error,
            status_error=status_error,
            annotations=dict(meta.get("annotations") or {}),
            generation=meta.get("generation"),
            created=parse_time(created) if isinstance(created, str) else None,
            resource_version=meta.get("resourceVersion"),
            plan=tuple(expand_plan(spec)) if spec is not None else (),
            raw_phase=str(raw_phase) if raw_phase else None,
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def phase(self) -> str:
        return self.raw_phase or "<no status>"

    def step_at(self, index: int) -> Step | None:
        return self.plan[index] if 0 <= index < len(self.plan) else None

    @property
    def current_step(self) -> Step | None:
        return self.step_at(self.status.step)

    @property
    def total_steps(self) -> int:
        return self.status.total_steps or len(self.plan)

    def hold_remaining(self, now: datetime) -> timedelta | None:
        """Time left in the current timed pause, from ``status.stepStartedAt``; None when the
        current step is not a timed pause or the hold has not started."""
        step = self.current_step
        started = self.status.step_started_at
        if step is None or step.pause is None or step.pause.duration is None or started is None:
            return None
        end = started + parse_duration(step.pause.duration)
        return max(timedelta(0), end - now)

    def rollback_remaining(self, now: datetime) -> timedelta | None:
        """Time left in a graceful rollback ramp."""
        rb = self.status.rollback
        if rb is None or rb.mode != "graceful" or self.spec is None:
            return None
        end = rb.started_at + parse_duration(self.spec.effective_rollback().duration)
        return max(timedelta(0), end - now)

    def next_approval(self) -> int | None:
        """Index of the next step (from the current one) that waits for a person."""
        for i in range(self.status.step, len(self.plan)):
            if self.plan[i].needs_approval:
                return i
        return None


def describe_step(step: Step) -> str:
    """ "setWeight 25", "pause 30s", "approval" or "pause (until approved)"."""
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.pause is not None:
        return f"pause {step.pause.duration}" if step.pause.duration else "pause (until approved)"
    return "approval"


def describe_step_at(view: RolloutView, index: int) -> str:
    """A step with what it gates, e.g. "approval before setWeight 50"."""
    step = view.step_at(index)
    if step is None:
        return "end of plan" if view.plan and index >= len(view.plan) else "unknown step"
    text = describe_step(step)
    nxt = view.step_at(index + 1)
    if step.needs_approval and nxt is not None and nxt.set_weight is not None:
        text += f" before setWeight {nxt.set_weight}"
    return text


def parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


M = TypeVar("M", bound=BaseModel)


def parse_leniently(model: type[M], raw: Mapping[str, Any]) -> tuple[M, str | None]:
    """Validate ``raw``; on failure leave out what does not parse (an entry of a list, else a
    top-level field) and say what was left out. Never raises."""
    try:
        return model.model_validate(raw), None
    except ValidationError as e:
        errors = e.errors()
    data = dict(raw)
    bad_items: dict[str, set[int]] = {}
    bad_fields: set[str] = set()
    for err in errors:
        loc = err["loc"]
        if not loc:
            continue
        key = str(loc[0])
        if len(loc) > 1 and isinstance(loc[1], int) and isinstance(data.get(key), list):
            bad_items.setdefault(key, set()).add(loc[1])
        else:
            bad_fields.add(key)
    for key, indexes in bad_items.items():
        data[key] = [item for i, item in enumerate(data[key]) if i not in indexes]
    for key in bad_fields:
        data.pop(key, None)
    left_out = sorted(bad_fields | {f"{k}[{i}]" for k, ix in bad_items.items() for i in ix})
    note = f"status fields not understood by this CLI: {', '.join(left_out)}"
    try:
        return model.model_validate(data), note
    except ValidationError:
        return model.model_validate({}), "status not understood by this CLI"


def first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"spec{'.' + where if where else ''}: {err['msg']}"


def unique_token(now: datetime) -> str:
    """A value never used before for a one-shot annotation: the operator ignores a value it
    already handled, so retry and promote must differ each time."""
    return format_timestamp(now)
