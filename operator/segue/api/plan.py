"""Plan expansion: the steps a Rollout walks, from its explicit steps or its risk preset."""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from segue.api.spec import Approval, Pause, Risk, RolloutSpec, Step


@dataclass(frozen=True)
class Preset:
    weights: tuple[int, ...]
    hold: str
    # An approval step precedes every setWeight at or above this weight (None: never).
    approval_from: int | None = None


PRESETS: Final[Mapping[Risk, Preset]] = {
    "low": Preset(weights=(10, 25, 50, 75, 100), hold="30m"),
    "medium": Preset(weights=(5, 10, 25, 50, 75, 100), hold="1h"),
    "critical": Preset(weights=(1, 5, 10, 25, 50, 75, 100), hold="2h", approval_from=50),
}


def preset_steps(risk: Risk, hold: str | None = None) -> list[Step]:
    """For each weight: [approval if needed], setWeight, pause{hold}; no hold after 100."""
    preset = PRESETS[risk]
    steps: list[Step] = []
    for weight in preset.weights:
        if preset.approval_from is not None and weight >= preset.approval_from:
            steps.append(Step(approval=Approval()))
        steps.append(Step(set_weight=weight))
        if weight != 100:
            steps.append(Step(pause=Pause(duration=hold or preset.hold)))
    return steps


def plan(spec: RolloutSpec) -> list[Step]:
    """The expanded plan; ``status.step`` indexes into it.

    Explicit steps win over the preset. A plan whose last setWeight is below 100 gets a
    final ``setWeight: 100``: a Rollout is done only when the new version has all traffic.
    """
    return list(_planned(spec).steps)


def _expand(spec: RolloutSpec) -> tuple[Step, ...]:
    if spec.steps is not None:
        steps = [s.model_copy() for s in spec.steps]  # shallow: nothing changes a nested part
    else:
        assert spec.risk is not None  # the spec validator guarantees one of them
        steps = preset_steps(spec.risk, spec.hold)
    weights = [s.set_weight for s in steps if s.set_weight is not None]
    if not weights or weights[-1] != 100:
        steps.append(Step(set_weight=100))
    return tuple(steps)


@dataclass(frozen=True)
class _Planned:
    spec: weakref.ref[RolloutSpec]
    steps: tuple[Step, ...]
    digest: str


# The controller parses a spec once per generation and passes the same object on every
# pass; a parsed spec is never changed. Expanding and digesting it once per object, not
# once per pass, saves about a fifth of a pass's time. An entry lives as long as its spec.
_planned_by_id: dict[int, _Planned] = {}


def _planned(spec: RolloutSpec) -> _Planned:
    key = id(spec)
    found = _planned_by_id.get(key)
    if found is not None and found.spec() is spec:
        return found
    ref = weakref.ref(spec, lambda _: _planned_by_id.pop(key, None))
    made = _Planned(ref, _expand(spec), _digest(spec))
    _planned_by_id[key] = made
    return made


# The spec fields that make up the plan: what it takes the "approve" permission to change
# once traffic has moved (the chart's admission policy checks the same four).
PLAN_FIELDS: Final = ("steps", "risk", "hold", "analysis")


def plan_digest(spec: RolloutSpec) -> str:
    """A digest of the plan fields as written (defaults left out, so a new default in a
    later version of Segue is not an edit); ``status.planDigest`` keeps it, so an edit is
    told apart from other spec changes that also bump the generation."""
    return _planned(spec).digest


def _digest(spec: RolloutSpec) -> str:
    fields = spec.model_dump(
        mode="json", by_alias=True, include=set(PLAN_FIELDS), exclude_unset=True
    )
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]
