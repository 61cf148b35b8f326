"""The engine's entry points: ``decide`` for a valid spec, ``invalid_spec`` for one that
does not parse. Pure: the same inputs give the same decision; ``obs.now`` is the clock."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from segue.api.spec import RolloutSpec
from segue.api.status import RolloutStatus
from segue.engine import conditions, rollback
from segue.engine.annotations import handle as handle_annotations
from segue.engine.context import (
    SLOW_POLL_SECONDS,
    STEPPING_PHASES,
    Context,
    Outcome,
    Recorder,
)
from segue.engine.gates import Trigger, count_round
from segue.engine.restart import restart
from segue.engine.steps import active
from segue.engine.types import Decision, Observations

# Transitions chain within one call (Pending -> Progressing -> ...); bounded for safety.
_MAX_TRANSITIONS: Final = 8


def decide(spec: RolloutSpec, status: RolloutStatus | None, obs: Observations) -> Decision:
    st = status.model_copy(deep=True) if status is not None else RolloutStatus()
    ctx = Context.create(spec, st, obs)
    spec_changed = st.observed_generation != obs.generation
    st.observed_generation = obs.generation
    st.total_steps = len(ctx.plan)
    if obs.router_weight is not None:
        st.weight = max(0, min(100, obs.router_weight))
    if st.phase is None:
        st.step = 0
        st.new_revision = obs.new_revision
        ctx.enter("Pending", "new Rollout")
    elif st.phase in STEPPING_PHASES | {"RollingBack"} and st.step >= len(ctx.plan):
        st.step = len(ctx.plan) - 1  # the plan was shortened under a running Rollout

    if obs.missing:
        return _stalled_on_missing(ctx)

    _check_revision(ctx)
    handle_annotations(ctx)
    _act_on_gates(ctx, count_round(ctx))
    _run(ctx, spec_changed)
    conditions.update(
        st,
        now=obs.now,
        generation=obs.generation,
        progress_reason=ctx.progress_reason,
        analysis_configured=spec.analysis is not None,
    )
    return ctx.decision()


def invalid_spec(
    status: RolloutStatus | None, *, now: datetime, generation: int, message: str
) -> Decision:
    """The spec does not parse: Failed, with the reason, and no traffic action. A corrected
    spec (a new generation) resumes the Rollout where it stopped."""
    st = status.model_copy(deep=True) if status is not None else RolloutStatus()
    rec = Recorder(status=st, now=now, generation=generation)
    st.observed_generation = generation
    rec.enter("Failed", f"invalid spec: {message}")
    conditions.update(
        st,
        now=now,
        generation=generation,
        progress_reason=None,
        analysis_configured=False,
        invalid=message,
    )
    return rec.decision()


def _stalled_on_missing(ctx: Context) -> Decision:
    st = ctx.status
    text = "missing: " + ", ".join(ctx.obs.missing)
    old = st.condition("Stalled")
    if old is None or old.status != "True" or old.message != text:
        ctx.event("Warning", "MissingReference", text)
    st.message = text
    ctx.wake_in(SLOW_POLL_SECONDS)
    conditions.update(
        st,
        now=ctx.now,
        generation=ctx.generation,
        progress_reason=None,
        analysis_configured=ctx.spec.analysis is not None,
        missing=text,
    )
    return ctx.decision()


def _check_revision(ctx: Context) -> None:
    st = ctx.status
    new, old = ctx.obs.new_revision, st.new_revision
    if new == old:
        return
    if old is None or st.phase in ("Pending", "Waiting"):
        # Nothing has moved yet: the plan simply starts with this revision.
        st.new_revision = new
        return
    restart(ctx, "Restarted", f"new revision {new} (was {old})", actor="segue")


def _act_on_gates(ctx: Context, triggers: list[Trigger]) -> None:
    if not triggers:
        return
    st = ctx.status
    immediate = [t for t in triggers if t.verdict.severity == "rollback"]
    graceful = [t for t in triggers if t.verdict.severity == "rollback-graceful"]
    if st.phase in STEPPING_PHASES:
        if immediate:
            t = immediate[0]
            rollback.start(ctx, "immediate", t.reason(), f"gate {t.verdict.name}", t)
        elif graceful:
            t = graceful[0]
            rollback.start(ctx, "graceful", t.reason(), f"gate {t.verdict.name}", t)
    elif st.phase == "RollingBack" and immediate:
        t = immediate[0]
        rollback.escalate(ctx, t.reason(), f"gate {t.verdict.name}", t)


def _run(ctx: Context, spec_changed: bool) -> None:
    st = ctx.status
    for _ in range(_MAX_TRANSITIONS):
        before = (st.phase, st.paused_reason)
        if st.phase in ("Pending", "Waiting"):
            _start(ctx)
        elif st.phase in STEPPING_PHASES:
            active(ctx)
        elif st.phase == "RollingBack":
            rollback.tick(ctx)
        elif st.phase == "Failed" and spec_changed and st.rollback is not None:
            # It failed while rolling back (or after): a corrected spec finishes the
            # rollback, it never walks forward again (retry does that).
            ctx.enter("RollingBack", "spec corrected; finishing the rollback")
        elif st.phase == "Failed" and spec_changed:
            ctx.enter("Progressing", f"spec corrected; resuming at step {st.step}")
        if (st.phase, st.paused_reason) == before:
            return


def _start(ctx: Context) -> None:
    pending = ctx.obs.dependencies_pending
    if pending:
        ctx.settle(
            Outcome(
                "Waiting",
                f"waiting for Rollouts to succeed first: {', '.join(pending)}",
                reason="WaitingForDependencies",
                requeue=SLOW_POLL_SECONDS,
            )
        )
        return
    ctx.enter("Progressing", f"starting the plan ({len(ctx.plan)} steps)")
