"""The pure engine: (spec, status, observations) -> (new status, actions).

No I/O and no clock: ``Observations.now`` is the time. Every action is idempotent, so a
restarted operator may replay a decision safely.
"""

from segue.api.plan import PRESETS, plan
from segue.engine.annotations import (
    ABORT,
    APPROVE,
    COMPANIONS,
    OBSERVED,
    ONE_SHOT,
    PAUSE,
    PLAN_EDITED_BY,
    PREFIX,
    PROMOTE,
    RETRY,
)
from segue.engine.decide import decide, invalid_spec
from segue.engine.types import (
    Action,
    ClearAnnotation,
    Decision,
    EmitEvent,
    EventType,
    GateRound,
    Observations,
    PhaseChanged,
    ReleaseFinalizer,
    SetWeight,
)

__all__ = [
    "ABORT",
    "APPROVE",
    "COMPANIONS",
    "OBSERVED",
    "ONE_SHOT",
    "PAUSE",
    "PLAN_EDITED_BY",
    "PREFIX",
    "PRESETS",
    "PROMOTE",
    "RETRY",
    "Action",
    "ClearAnnotation",
    "Decision",
    "EmitEvent",
    "EventType",
    "GateRound",
    "Observations",
    "PhaseChanged",
    "ReleaseFinalizer",
    "SetWeight",
    "decide",
    "invalid_spec",
    "plan",
]
