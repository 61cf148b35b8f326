"""Walking the plan: weights, holds, approvals and promotion, while traffic is split.

Rules that keep every weight change safe:
- a weight is asked of the router only after the side that gains has ready pods;
- a step counts as reached only once the router reports its weight;
- raising the weight (from above 0), ending a hold and passing an approval need a passing
  analysis round evaluated after ``stepStartedAt``; a gate failing in the latest round holds
  everything, even the confirmation of a weight already asked for.
"""

from __future__ import annotations

from typing import Final

from segue.api.duration import parse_duration
from segue.api.routing import Segment
from segue.engine.context import Context, Outcome, format_time, seconds
from segue.engine.gates import (
    advance_blocker,
    failing_blocker,
    pausing_gates,
    unavailable_blocker,
)


def active(ctx: Context) -> None:
    """Handle the stepping phases (Progressing, Paused, AwaitingApproval)."""
    st = ctx.status
    paused_by = pausing_gates(ctx)
    unavailable = unavailable_blocker(ctx)
    if ctx.manual_pause:
        who = ctx.pause_actor
        by = "" if who == "segue.dev/pause" else f" (set by {who})"
        outcome = Outcome(
            "Paused",
            f"paused by annotation segue.dev/pause{by}; remove it to resume",
            paused_reason="Manual",
            reason="Paused",
            actor=who,
        )
    elif paused_by:
        details = "; ".join(
            f"gate {g.name} failed {g.consecutive_failures}/{g.failure_limit} ({g.message})"
            for g in paused_by
        )
        outcome = Outcome(
            "Paused",
            f"{details}; resumes when it passes",
            paused_reason="GateFailed",
            reason="GateFailed",
        )
    elif unavailable is not None:
        outcome = unavailable
    else:
        if st.phase == "Paused" and st.paused_reason == "GateFailed" and st.step_started_at:
            # The gate recovered: the observation window of this step starts over.
            st.step_started_at = ctx.now
        outcome = progress(ctx)
    ctx.settle(outcome)


def progress(ctx: Context) -> Outcome:
    """Move through as many steps as the observations allow; say where it waits."""
    st = ctx.status
    plan = ctx.plan
    for _ in range(2 * len(plan) + 4):
        router = ctx.obs.router_weight
        if router is None:
            return Outcome(
                "Progressing",
                "cannot read the router's weight; retrying when it changes",
                reason="RouterUnreadable",
            )
        if router != st.target_weight or _key(ctx.obs.router_segment) != _key(st.segment):
            return _converge(ctx, router, st.target_weight)
        if st.promoting:
            if st.target_weight != 100:
                return _request(ctx, 100)
            return _finish(ctx)
        if st.step >= len(plan):
            return _finish(ctx)
        step = plan[st.step]
        if step.set_weight is not None:
            if st.target_weight != step.set_weight:
                return _request(ctx, step.set_weight)
            blocked = failing_blocker(ctx)
            if blocked is not None:
                return blocked
            st.step_started_at = ctx.now
            text = f"step {st.step}: weight {step.set_weight}% confirmed by the router"
            ctx.event("Normal", "WeightSet", text)
            ctx.record("WeightSet", text)
            _advance(ctx)
        elif step.set_segment is not None:
            if _key(st.segment) != step.set_segment.key():
                return _request_segment(ctx, step.set_segment)
            blocked = failing_blocker(ctx)
            if blocked is not None:
                return blocked
            st.step_started_at = ctx.now
            text = (
                f"step {st.step}: {describe_segment(step.set_segment)} sent to the new "
                "version, confirmed by the router"
            )
            ctx.event("Normal", "SegmentSet", text)
            ctx.record("SegmentSet", text)
            _advance(ctx)
        elif step.pause is not None and step.pause.duration is not None:
            if st.step_started_at is None:
                st.step_started_at = ctx.now
            end = st.step_started_at + parse_duration(step.pause.duration)
            if ctx.now < end:
                return Outcome(
                    "Progressing",
                    f"step {st.step}: holding at {st.target_weight}% until {format_time(end)}",
                    reason="Holding",
                    requeue=seconds(end - ctx.now),
                )
            blocked = advance_blocker(ctx)
            if blocked is not None:
                return blocked
            _advance(ctx)
        else:
            if st.approved_step != st.step:
                return Outcome(
                    "AwaitingApproval",
                    f"step {st.step} waits for approval at {st.target_weight}%: annotate "
                    f"segue.dev/approve={st.step}",
                    reason="AwaitingApproval",
                )
            blocked = advance_blocker(ctx)
            if blocked is not None:
                return blocked
            _advance(ctx)
    # Not reached (every pass through the loop advances or returns); if it were, the next
    # call carries on.
    return Outcome("Progressing", "working through the plan", requeue=1.0)


def _advance(ctx: Context) -> None:
    st = ctx.status
    st.step += 1
    st.approved_step = None
    if st.step < len(ctx.plan):
        nxt = ctx.plan[st.step]
        if nxt.pause is not None and nxt.pause.duration is not None:
            st.step_started_at = ctx.now


def _key(segment: Segment | None) -> tuple[str, tuple[str, ...]] | None:
    return None if segment is None else segment.key()


def describe_segment(segment: Segment) -> str:
    """``customers acme, globex (x-customer-id)``, the values capped at five."""
    values = ", ".join(segment.values[:5])
    more = f" and {len(segment.values) - 5} more" if len(segment.values) > 5 else ""
    return f"{segment.header} in [{values}{more}]"


# The reason a step gives while the router does not report the weight asked for yet.
WAITING_FOR_ROUTER: Final = "WaitingForRouter"


def _converge(ctx: Context, router: int, target: int) -> Outcome:
    """A weight (and segment) was asked for and the router does not report it yet: ask
    again (it is idempotent, and survives an operator restart between status write and
    router write). The router's change is a watch event: no timed wake-up."""
    blocked = ctx.capacity_blocker(router, target)
    if blocked is not None:
        return blocked
    segment = ctx.status.segment
    ctx.set_weight(target, segment)
    seg = "" if segment is None else f" and {describe_segment(segment)}"
    return Outcome(
        "Progressing",
        f"step {ctx.status.step}: waiting for the router to report {target}%{seg} "
        f"(reads {router}%)",
        reason=WAITING_FOR_ROUTER,
    )


def _request_segment(ctx: Context, segment: Segment) -> Outcome:
    """Send a segment to the new version: more of its traffic, so it needs what raising
    the weight needs (a passing round above 0%, ready new pods)."""
    st = ctx.status
    blocked = advance_blocker(ctx) if st.target_weight > 0 else failing_blocker(ctx)
    if blocked is not None:
        return blocked
    obs = ctx.obs
    if not obs.router_manages_capacity and (obs.new_ready <= 0 or obs.new_missing):
        return Outcome(
            "Progressing",
            f"waiting for ready pods of Deployment {ctx.spec.new.deployment} before sending "
            f"{describe_segment(segment)} to the new version",
            reason="WaitingForCapacity",
        )
    st.segment = segment
    return _converge(ctx, st.target_weight, st.target_weight)


def _request(ctx: Context, weight: int) -> Outcome:
    st = ctx.status
    current = st.target_weight
    if weight >= 100:
        st.segment = None  # everyone goes to the new version: the segment rule goes
    if weight > current:
        # From 0 there is nothing to analyse yet; above it, more traffic needs a pass.
        blocked = advance_blocker(ctx) if current > 0 else failing_blocker(ctx)
        if blocked is not None:
            return blocked
    blocked = ctx.capacity_blocker(current, weight)
    if blocked is not None:
        return blocked
    st.target_weight = weight
    return _converge(ctx, current, weight)


def _finish(ctx: Context) -> Outcome:
    st = ctx.status
    if st.target_weight != 100:
        return _request(ctx, 100)
    blocked = failing_blocker(ctx)
    if blocked is not None:
        return blocked
    st.step = len(ctx.plan)
    st.promoting = None
    st.approved_step = None
    baking = _bake(ctx)
    if baking is not None:
        return baking
    return Outcome("Succeeded", "all traffic on the new version")


def _bake(ctx: Context) -> Outcome | None:
    """With ``spec.bakeTime``: stay Progressing at 100% until ``status.bakeUntil`` (set
    once, so a restart neither shortens nor restarts the bake) while the gates keep
    running; a failing gate rolls back like at any step. None once the bake is over."""
    st, bake_time = ctx.status, ctx.spec.bake_time
    if bake_time is None:
        return None
    if st.bake_until is None:
        st.bake_until = ctx.now + parse_duration(bake_time)
        text = f"weight 100% reached; baking until {format_time(st.bake_until)}"
        ctx.event("Normal", "Baking", text)
        ctx.record("Baking", text)
    if ctx.now < st.bake_until:
        return Outcome(
            "Progressing",
            f"baking at 100% until {format_time(st.bake_until)}",
            reason="Baking",
            requeue=seconds(st.bake_until - ctx.now),
        )
    return None
