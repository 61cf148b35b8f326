"""Rollback: immediate (one SetWeight(0)) or graceful (a linear ramp down to 0).

The ramp is recomputed from ``status.rollback.startedAt`` on every call, so a restarted
operator picks it up where the clock says it should be. Weight only ever moves onto a
legacy side with ready pods (unless the router scales for itself).
"""

from __future__ import annotations

import math

from segue.api.duration import parse_duration
from segue.api.spec import RollbackMode
from segue.api.status import RollbackStatus
from segue.engine.context import Context, Outcome, format_time, seconds
from segue.engine.gates import Trigger

_SLACK_SECONDS = 0.001


def start(
    ctx: Context,
    mode: RollbackMode,
    reason: str,
    actor: str,
    trigger: Trigger | None = None,
    from_weight: int | None = None,
) -> None:
    """Enter RollingBack from where traffic is (``from_weight``: the router's weight
    unless the caller knows better)."""
    st = ctx.status
    current = ctx.current_weight() if from_weight is None else from_weight
    st.rollback = RollbackStatus(mode=mode, from_weight=current, started_at=ctx.now, reason=reason)
    # The ramp starts from where traffic is; a lower weight already asked for stands.
    st.target_weight = min(current, st.target_weight)
    st.promoting = None
    st.approved_step = None
    st.bake_until = None
    ctx.enter(
        "RollingBack",
        f"rolling back ({mode}) from {current}%: {reason}",
        actor=actor,
        verdict=trigger.verdict if trigger else None,
    )


def escalate(ctx: Context, reason: str, actor: str, trigger: Trigger | None = None) -> None:
    """A graceful rollback becomes immediate (a worse failure, or a person's abort)."""
    rb = ctx.status.rollback
    if rb is None or rb.mode == "immediate":
        return
    rb.mode = "immediate"
    text = f"graceful rollback escalated to immediate: {reason}"
    ctx.event("Warning", "RollbackEscalated", text)
    ctx.record("RollbackEscalated", text, actor=actor, verdict=trigger.verdict if trigger else None)


def tick(ctx: Context) -> None:
    """One step of a rollback in progress: lower the weight, then finish at 0."""
    st = ctx.status
    rb = st.rollback
    if rb is None:  # a status from elsewhere; roll back at once rather than guess
        rb = st.rollback = RollbackStatus(
            mode="immediate",
            from_weight=ctx.current_weight(),
            started_at=ctx.now,
            reason="rollback without a record",
        )
    router = ctx.obs.router_weight
    desired, next_change = _ramp(ctx, rb)
    # Never raise the new version's share during a rollback, whoever lowered it.
    desired = min(desired, st.target_weight, router if router is not None else 100)
    if router is None or router > desired:
        blocked = ctx.capacity_blocker(router, desired)
        if blocked is not None:
            blocked.phase = "RollingBack"
            ctx.settle(blocked)
            return
    st.target_weight = desired
    segment_left = ctx.obs.router_segment is not None
    if router != desired or segment_left:
        ctx.set_weight(desired)  # no segment: the rule goes in the first write
    if desired == 0 and router == 0 and not segment_left:
        ctx.enter("RolledBack", f"rolled back: all traffic on the legacy version ({rb.reason})")
        return
    if rb.mode == "graceful" and desired > 0:
        end = rb.started_at + parse_duration(ctx.spec.effective_rollback().duration)
        message = f"rolling back gracefully: {desired}% until {format_time(end)}, 0% by then"
    else:
        message = f"rolling back: moving all traffic to the legacy version (router reads {router}%)"
    # Only the ramp's next step is a timed wake-up; the router reaching the weight is a
    # watch event.
    ctx.settle(Outcome("RollingBack", message, reason="RollingBack", requeue=next_change))


def _ramp(ctx: Context, rb: RollbackStatus) -> tuple[int, float | None]:
    """The weight the ramp asks for now, and seconds until it asks for a lower one."""
    if rb.mode == "immediate" or rb.from_weight <= 0:
        return 0, None
    duration = seconds(parse_duration(ctx.spec.effective_rollback().duration))
    elapsed = max(0.0, seconds(ctx.now - rb.started_at))
    if duration <= 0 or elapsed >= duration:
        return 0, None
    start = rb.from_weight
    # ceil: the ramp stays at or above the straight line and reaches 0 exactly at the end.
    # The millisecond of slack absorbs times rounded to microseconds on the way through
    # status, so a call at the computed change time sees the change.
    line = start * (1 - (elapsed + _SLACK_SECONDS) / duration)
    weight = max(0, min(start, math.ceil(line)))
    # The line crosses weight - 1 at this time; that is the next whole-percent change.
    next_at = duration * (1 - (weight - 1) / start)
    return weight, max(1.0, next_at - elapsed)
