"""Which notifications a decision calls for. Pure: the controller passes the status it read,
the status it wrote and the engine's phase changes, and publishes what comes back.

The engine's ``PhaseChanged`` action is the one record of a transition: it says what the
Rollout entered, why (its message) and because of which gate (its verdict). A decision
that chains several transitions (Pending, then Progressing, then AwaitingApproval) gives
one notification, for the phase it settled in, of the most specific kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from segue.api import GateStatus, RolloutStatus
from segue.engine import PhaseChanged
from segue.notify.types import Kind, Notification

_KIND_OF_PHASE: dict[str, Kind] = {
    "AwaitingApproval": "ApprovalNeeded",
    "RollingBack": "RollbackStarted",
    "RolledBack": "RolledBack",
    "Succeeded": "Succeeded",
    "Failed": "Failed",
}


def _kind(status: RolloutStatus) -> Kind:
    if status.phase == "Paused" and status.paused_reason == "GateFailed":
        return "GateFailed"
    return _KIND_OF_PHASE.get(status.phase or "", "PhaseChanged")


def _gate(status: RolloutStatus, change: PhaseChanged | None) -> GateStatus | None:
    if change is not None and change.verdict is not None:
        return change.verdict
    if status.phase == "Paused" and status.paused_reason == "GateFailed":
        failing = next((g for g in status.gates if g.verdict == "Fail"), None)
        # A copy: the notification outlives the status it was read from.
        return failing.model_copy() if failing is not None else None
    return None


def notifications_for(
    namespace: str,
    rollout: str,
    before: RolloutStatus | None,
    after: RolloutStatus,
    now: datetime,
    changes: Sequence[PhaseChanged] = (),
) -> tuple[Notification, ...]:
    """The notifications for a decision that went from ``before`` (None: a new Rollout) to
    ``after`` through ``changes``."""
    if after.phase is None:
        return ()
    settled = next((c for c in reversed(changes) if c.new == after.phase), None)
    # A plan can wait for approval at two steps in a row without leaving the phase.
    new_approval = (
        after.phase == "AwaitingApproval" and before is not None and before.step != after.step
    )
    if settled is None and not new_approval:
        return ()
    old_phase = changes[0].old if changes else (before.phase if before else None)
    message = (settled.message if settled is not None else None) or after.message or ""
    return (
        Notification(
            kind=_kind(after),
            namespace=namespace,
            rollout=rollout,
            phase=after.phase,
            step=after.step,
            weight=after.weight,
            message=message,
            time=now,
            total_steps=after.total_steps or None,
            previous_phase=old_phase,
            gate=_gate(after, settled),
        ),
    )
