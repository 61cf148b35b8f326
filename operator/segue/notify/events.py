"""Which notifications a status change calls for. Pure: the controller passes the status it
read and the status it is about to write, and publishes what comes back.

One change of phase (or of pause reason) gives one notification, of the most specific kind,
so a receiver that takes every kind hears of each change once.
"""

from __future__ import annotations

from datetime import datetime

from segue.api import HistoryEntry, RolloutStatus
from segue.notify.types import GateDetails, Kind, Notification

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


def _entry(status: RolloutStatus) -> HistoryEntry | None:
    """The history entry the engine wrote on entering the current phase: it names the gate
    (and its numbers) when a verdict caused the change."""
    return next((h for h in reversed(status.history) if h.event == status.phase), None)


def _gate(status: RolloutStatus, entry: HistoryEntry | None) -> GateDetails | None:
    if entry is not None and entry.gate:
        return GateDetails(entry.gate, entry.value, entry.legacy_value, entry.bound or "")
    if status.phase == "Paused" and status.paused_reason == "GateFailed":
        failing = next((g for g in status.gates if g.verdict == "Fail"), None)
        if failing is not None:
            return GateDetails(failing.name, failing.value, failing.legacy_value, failing.bound)
    return None


def notifications_for(
    namespace: str,
    rollout: str,
    before: RolloutStatus | None,
    after: RolloutStatus,
    now: datetime,
) -> tuple[Notification, ...]:
    """The notifications for going from ``before`` (None: a new Rollout) to ``after``."""
    if after.phase is None:
        return ()
    old_phase = before.phase if before is not None else None
    changed = old_phase != after.phase or (
        before is not None and before.paused_reason != after.paused_reason
    )
    # A plan can wait for approval at two steps in a row without leaving the phase.
    new_approval = (
        after.phase == "AwaitingApproval" and before is not None and before.step != after.step
    )
    if not (changed or new_approval):
        return ()
    # The entry written on entering the phase says why; the status message may already
    # say what the new phase does next (a rollback's first ramp step, say).
    entry = _entry(after) if changed else None
    message = (entry.reason if entry is not None else None) or after.message or ""
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
            gate=_gate(after, entry),
        ),
    )
