"""Groupings of the Rollout's phases, written once.

The engine, the controller, metrics, notifications and the CLI all ask the same questions
of a phase (is it finished? is traffic split? is the change worth a Warning?); they answer
them here and nowhere else.
"""

from __future__ import annotations

from typing import Final, Literal

from segue.api.status import PausedReason, Phase

EventType = Literal["Normal", "Warning"]

# Finished: nothing moves until a person acts (retry, a new revision, a corrected spec).
TERMINAL: Final[frozenset[Phase]] = frozenset({"Succeeded", "RolledBack", "Failed"})
# The engine works towards a goal (kstatus: Reconciling).
ACTIVE: Final[frozenset[Phase]] = frozenset(
    {"Pending", "Waiting", "Progressing", "Paused", "AwaitingApproval", "RollingBack"}
)
# Traffic is split and the plan is walked.
STEPPING: Final[frozenset[Phase]] = frozenset({"Progressing", "Paused", "AwaitingApproval"})
# Traffic is, or may still be, on the new version: analysis rounds run and count, and a
# vanished new Deployment is rolled back from.
ANALYSED: Final[frozenset[Phase]] = STEPPING | {"RollingBack"}
# The new version may carry traffic: editing the plan in one of these (or at a weight above
# 0) takes the "approve" permission and is recorded in history (PlanChanged).
TRAFFIC_MOVED: Final[frozenset[Phase]] = ANALYSED
# Ended without success: a Rollout that depends on one is blocked until it is retried
# (condition Stalled, reason DependencyRolledBack).
ROLLED_BACK: Final[frozenset[Phase]] = frozenset({"RolledBack", "Failed"})
# Entering one of these is a Warning (a Paused other than Manual is one too).
WARNING: Final[frozenset[Phase]] = frozenset({"RollingBack", "RolledBack", "Failed"})
# Deleting the Rollout in one of these leaves traffic where it is: either nothing moved
# yet, or the outcome (all on the new version, all on legacy) is final.
NOTHING_TO_UNDO: Final[frozenset[Phase | None]] = frozenset(
    {None, "Pending", "Waiting", "Succeeded", "RolledBack"}
)


def event_type(phase: Phase, paused_reason: PausedReason | None = None) -> EventType:
    """The Kubernetes Event type for entering ``phase``: a person should look at a
    rollback, a failure, or a pause that a person did not ask for."""
    if phase in WARNING:
        return "Warning"
    if phase == "Paused" and paused_reason != "Manual":
        return "Warning"
    return "Normal"
