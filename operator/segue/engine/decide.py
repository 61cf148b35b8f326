"""The engine's entry points: ``decide`` for a valid spec, ``invalid_spec`` for one that
does not parse. Pure: the same inputs give the same decision; ``obs.now`` is the clock.

Order within ``decide``, the same in every case: one-shot and pause annotations, then gate
rounds (so an abort or a gate rollback is recorded whatever else is wrong), then a rollback
away from a vanished new Deployment, then exactly one of: deletion, a missing reference
(Stalled), an object Segue may not write to (Stalled, ``NotManaged``), or the phase's own
work. Conditions come last.
"""

from __future__ import annotations

from typing import Final

from segue.api.phases import ANALYSED, STEPPING
from segue.api.spec import RolloutSpec
from segue.api.status import RollbackStatus, RolloutStatus
from segue.api.text import MAX_NOTE_BYTES, annotation_mark, cap
from segue.engine import conditions, deletion, dependencies, plan_edits, references, rollback
from segue.engine.annotations import ABORT, actor, clear_companions
from segue.engine.annotations import handle as handle_annotations
from segue.engine.context import Context, Recorder
from segue.engine.gates import Trigger, count_round
from segue.engine.restart import restart
from segue.engine.steps import active
from segue.engine.types import Decision, Observations

# Transitions chain within one call (Pending -> Progressing -> ...); bounded for safety.
_MAX_TRANSITIONS: Final = 8


def with_segment(router_weight: int | None, obs: Observations) -> int | None:
    """The router's weight for deciding whether traffic is back on legacy: a segment still
    routed to the new version counts as traffic there, so a rollback or deletion asks
    again (weight 0, no segment) until the segment rule is gone too."""
    if router_weight == 0 and obs.router_segment is not None:
        return 1
    return router_weight


def decide(spec: RolloutSpec, status: RolloutStatus | None, obs: Observations) -> Decision:
    st = status.model_copy(deep=True) if status is not None else RolloutStatus()
    ctx = Context.create(spec, st, obs)
    last_weight = st.weight
    plan_edits.note(ctx, st.phase, last_weight)
    spec_changed = st.observed_generation != obs.generation
    st.observed_generation = obs.generation
    st.total_steps = len(ctx.plan)
    if obs.router_weight is not None:
        st.weight = max(0, min(100, obs.router_weight))
    if st.phase is None:
        if obs.deleting:  # never started: nothing to undo, nothing to say
            ctx.release_finalizer()
            return ctx.decision()
        st.step = 0
        st.new_revision = obs.new_revision
        ctx.enter("Pending", "new Rollout")
    elif st.bake_until is not None and st.phase in STEPPING:
        if st.step < len(ctx.plan):
            st.bake_until = None  # the plan grew during the bake: walk it, then bake anew
    elif st.phase in ANALYSED and st.step >= len(ctx.plan):
        st.step = len(ctx.plan) - 1  # the plan was shortened under a running Rollout

    _resume_if_corrected(ctx, spec_changed)
    if not obs.new_missing:  # without the Deployment its revision is unknown
        _check_revision(ctx)
    handle_annotations(ctx)
    _act_on_gates(ctx, count_round(ctx))
    references.leave_a_missing_new_version(ctx, last_weight)
    missing = references.describe_missing(ctx)
    unmanaged = references.describe_unmanaged(ctx)
    if obs.deleting:
        deletion.handle(
            ctx,
            since=obs.deleting_since,
            router_weight=with_segment(obs.router_weight, obs),
            blocker=references.deletion_blocker(ctx),
        )
    elif missing is not None:
        references.stall(ctx, missing)
    elif unmanaged is not None:
        references.stall(ctx, unmanaged, reason=references.NOT_MANAGED)
    else:
        _run(ctx)
    blocked = dependencies.stalled(ctx)
    dependencies.announce(ctx, blocked)
    degraded = references.legacy_capacity(ctx)
    references.announce_capacity(ctx, degraded)
    conditions.update(
        st,
        now=obs.now,
        generation=obs.generation,
        progress_reason=ctx.progress_reason,
        analysis_configured=spec.analysis is not None,
        missing=missing,
        unmanaged=unmanaged,
        degraded=degraded,
        dependency=blocked,
    )
    return ctx.decision()


def invalid_spec(
    status: RolloutStatus | None,
    obs: Observations,
    *,
    message: str,
    routable: bool,
) -> Decision:
    """The spec does not parse: phase Failed, the message naming the field.

    ``obs`` holds what the controller could still observe. Always read: ``now``,
    ``generation``, ``annotations``, ``deleting`` and ``deleting_since``. Read only when
    ``routable`` (a router could be built from the spec's traffic part and the two
    Deployment names): ``router_weight``, ``router_manages_capacity``, ``legacy_ready``,
    ``new_missing``, ``legacy_missing``, ``router_missing``, ``unmanaged``. Ignored: the
    revision, gates, dependencies, ``new_ready``, ``legacy_desired``.

    - ``segue.dev/abort`` is still honoured: an immediate rollback is recorded (phase
      stays Failed), the annotation cleared, and, when routable, weight 0 asked at once
      (onto ready legacy pods, unless the router scales or the new Deployment is gone). An
      immediate rollback in status is carried on to 0 the same way. Other annotations wait
      for a spec that parses.
    - Deletion releases the finalizer by the same rules as ``decide`` (at once when not
      routable: waiting cannot help).
    - A corrected spec (a new generation) resumes where it stopped, or finishes the
      rollback if one is recorded.
    """
    st = status.model_copy(deep=True) if status is not None else RolloutStatus()
    rec = Recorder(status=st, now=obs.now, generation=obs.generation)
    st.observed_generation = obs.generation
    router_weight = obs.router_weight if routable else None
    if router_weight is not None:
        router_weight = max(0, min(100, router_weight))
        st.weight = router_weight
        router_weight = with_segment(router_weight, obs)
    if st.phase is None and obs.deleting:
        rec.release_finalizer()
        return rec.decision()
    failed = f"invalid spec: {message}"
    rec.enter("Failed", failed)
    _abort_while_invalid(rec, obs, router_weight)
    blocker = _invalid_blocker(obs, routable, router_weight)
    if obs.deleting:
        deletion.handle(
            rec,
            since=obs.deleting_since,
            router_weight=router_weight,
            blocker=blocker,
            hopeless=not routable,
        )
    else:
        rb = st.rollback
        if rb is not None and rb.mode == "immediate" and st.target_weight == 0 and st.weight:
            if blocker is None:
                rec.set_weight(0)
                st.message = f"{failed}; rolling back: asking for 0% (router reads {st.weight}%)"
            else:
                st.message = f"{failed}; rolling back once traffic can move: {blocker}"
    conditions.update(
        st,
        now=obs.now,
        generation=obs.generation,
        progress_reason=None,
        analysis_configured=False,
        invalid=message,
    )
    return rec.decision()


def _abort_while_invalid(rec: Recorder, obs: Observations, router_weight: int | None) -> None:
    """Record ``segue.dev/abort`` as an immediate rollback, once per value."""
    st = rec.status
    handled = {k: v for k, v in (st.handled_annotations or {}).items() if k in obs.annotations}
    raw = obs.annotations.get(ABORT)
    if raw is not None:
        # Remembered as a mark and quoted only in part, as annotations.handle does.
        mark = annotation_mark(raw)
        value = cap(raw, MAX_NOTE_BYTES)
        if handled.get(ABORT) != mark:
            who = actor(obs.annotations, ABORT)
            by = "" if who == ABORT else f" by {who}"
            reason = f"aborted{by}: {value.strip()}" if value.strip() else f"aborted{by}"
            current = router_weight if router_weight is not None else st.weight
            st.rollback = RollbackStatus(
                mode="immediate", from_weight=current, started_at=rec.now, reason=reason
            )
            st.target_weight = 0
            st.promoting = None
            st.approved_step = None
            text = f"{reason} (the spec is invalid; traffic returns to legacy)"
            rec.event("Normal", "Aborted", text)
            rec.record("Aborted", reason, actor=who)
            handled[ABORT] = mark
        rec.clear_annotation(ABORT)
    clear_companions(rec, obs.annotations)
    st.handled_annotations = handled or None


def _invalid_blocker(obs: Observations, routable: bool, router_weight: int | None) -> str | None:
    if not routable:
        return "no router can be built from the spec"
    if obs.router_missing:
        return "the routing object was not found"
    if router_weight is None:
        return "cannot read the router's weight"
    if obs.legacy_missing:
        return "the legacy Deployment was not found"
    unmanaged = references.not_labelled(obs.unmanaged)
    if unmanaged is not None:
        return unmanaged
    if obs.router_manages_capacity or obs.new_missing or obs.legacy_ready > 0:
        return None
    return "no ready pods in the legacy Deployment"


def _resume_if_corrected(ctx: Context, spec_changed: bool) -> None:
    """Failed means "invalid spec"; a new generation that parses resumes the Rollout. If
    it failed while rolling back (or after an abort), the rollback is finished: it never
    walks forward again (retry does that)."""
    st = ctx.status
    if st.phase != "Failed" or not spec_changed:
        return
    if st.rollback is not None:
        ctx.enter("RollingBack", "spec corrected; finishing the rollback")
    else:
        ctx.enter("Progressing", f"spec corrected; resuming at step {st.step}")


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
    immediate = [t for t in triggers if t.verdict.on_failure == "rollback"]
    graceful = [t for t in triggers if t.verdict.on_failure == "rollback-graceful"]
    if st.phase in STEPPING:
        if immediate:
            t = immediate[0]
            rollback.start(ctx, "immediate", t.reason(), f"gate {t.verdict.name}", t)
        elif graceful:
            t = graceful[0]
            rollback.start(ctx, "graceful", t.reason(), f"gate {t.verdict.name}", t)
    elif st.phase == "RollingBack" and immediate:
        t = immediate[0]
        rollback.escalate(ctx, t.reason(), f"gate {t.verdict.name}", t)


def _run(ctx: Context) -> None:
    st = ctx.status
    for _ in range(_MAX_TRANSITIONS):
        before = (st.phase, st.paused_reason)
        if st.phase in ("Pending", "Waiting"):
            _start(ctx)
        elif st.phase in STEPPING:
            active(ctx)
        elif st.phase == "RollingBack":
            rollback.tick(ctx)
        if (st.phase, st.paused_reason) == before:
            return


def _start(ctx: Context) -> None:
    waiting = dependencies.blocker(ctx)
    if waiting is not None:
        ctx.settle(waiting)
        return
    ctx.status.legacy_replicas = ctx.obs.legacy_desired
    ctx.enter("Progressing", f"starting the plan ({len(ctx.plan)} steps)")
