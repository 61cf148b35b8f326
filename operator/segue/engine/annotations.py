"""Annotations people set on a Rollout, and how the engine acts on them.

One-shot annotations (approve, abort, retry, promote) act once: the engine records each in
history and asks for its removal. Until the removal is observed, ``status.handledAnnotations``
remembers the value, so replaying the same observations never acts twice. ``pause`` is a
level: the Rollout stays paused while it is present.

Each has a companion naming the person who set it (``segue.dev/approved-by``, ...), written
by the admission policies the chart installs (or by ``kubectl segue``). History and Events
name that person; without a companion the actor is the annotation's key. A companion is
removed together with its one-shot annotation, and once its annotation is gone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

from segue.api.phases import ACTIVE, STEPPING
from segue.api.text import MAX_NOTE_BYTES, annotation_mark, cap
from segue.engine import rollback
from segue.engine.context import Context, Recorder
from segue.engine.restart import restart
from segue.engine.types import ClearAnnotation

PREFIX: Final = "segue.dev/"
APPROVE: Final = "segue.dev/approve"
ABORT: Final = "segue.dev/abort"
RETRY: Final = "segue.dev/retry"
PAUSE: Final = "segue.dev/pause"
PROMOTE: Final = "segue.dev/promote"
ONE_SHOT: Final = (RETRY, ABORT, PROMOTE, APPROVE)  # in the order they are handled
# Who set each steering annotation: the requesting user, as the API server saw it.
APPROVED_BY: Final = "segue.dev/approved-by"
ABORTED_BY: Final = "segue.dev/aborted-by"
RETRIED_BY: Final = "segue.dev/retried-by"
PAUSED_BY: Final = "segue.dev/paused-by"
PROMOTED_BY: Final = "segue.dev/promoted-by"
COMPANIONS: Final[dict[str, str]] = {
    APPROVE: APPROVED_BY,
    ABORT: ABORTED_BY,
    RETRY: RETRIED_BY,
    PAUSE: PAUSED_BY,
    PROMOTE: PROMOTED_BY,
}
# Who last edited the plan (spec.steps, risk, hold, analysis) of a Rollout that had moved
# traffic; kept until the next such edit.
PLAN_EDITED_BY: Final = "segue.dev/plan-edited-by"
# Every annotation the engine reads.
OBSERVED: Final = (*ONE_SHOT, PAUSE, *COMPANIONS.values(), PLAN_EDITED_BY)

# A step index as people type it: ASCII digits only (int() would also take "1_0" and other
# scripts' digits), at most 3 of them (a plan has at most 65 steps).
STEP_INDEX_DIGITS: Final = 3
_STEP_INDEX: Final = re.compile(f"[0-9]{{1,{STEP_INDEX_DIGITS}}}")
MSG_STEP_INDEX: Final = (
    f"the value must be the index of the step to approve: 1 to {STEP_INDEX_DIGITS} "
    "ASCII digits (0-9)"
)


def parse_step_index(value: str) -> int | None:
    """The step index ``value`` names (surrounding spaces allowed), or None."""
    text = value.strip(" \t")
    return int(text) if _STEP_INDEX.fullmatch(text) else None


# Returns None when the annotation took effect, else why it was ignored.
_Handler = Callable[[Context, str, str], str | None]


def actor(annotations: Mapping[str, str], key: str) -> str:
    """Who set ``key``: its companion's user name, else the key itself."""
    who = annotations.get(COMPANIONS[key], "").strip()
    return cap(who, MAX_NOTE_BYTES) if who else key


def by(annotations: Mapping[str, str], key: str) -> str:
    """ " by <user>" for messages, or nothing without a companion."""
    who = actor(annotations, key)
    return "" if who == key else f" by {who}"


def handle(ctx: Context) -> None:
    annotations = ctx.obs.annotations
    st = ctx.status
    handled = {k: v for k, v in (st.handled_annotations or {}).items() if k in annotations}
    for key in ONE_SHOT:
        if key not in annotations:
            continue
        # Remembered as a mark (a digest when long) and quoted only in part, so a huge
        # value grows neither the status nor an Event.
        mark = annotation_mark(annotations[key])
        value = cap(annotations[key], MAX_NOTE_BYTES)
        who = actor(annotations, key)
        if handled.get(key) != mark:
            ignored = _HANDLERS[key](ctx, value, who)
            if ignored is not None:
                text = f"{key}={value!r}{by(annotations, key)} ignored: {ignored}"
                ctx.event("Warning", "AnnotationIgnored", text)
                ctx.record("AnnotationIgnored", text, actor=who)
            handled[key] = mark
        ctx.clear_annotation(key)
    clear_companions(ctx, annotations)
    st.handled_annotations = handled or None
    ctx.manual_pause = PAUSE in annotations
    ctx.pause_actor = actor(annotations, PAUSE)


def clear_companions(rec: Recorder, annotations: Mapping[str, str]) -> None:
    """Remove the companion of every one-shot annotation being removed, and of any
    annotation that is gone (pause included)."""
    clearing = {a.key for a in rec.actions if isinstance(a, ClearAnnotation)}
    for key, companion in COMPANIONS.items():
        if companion in annotations and (key in clearing or key not in annotations):
            rec.clear_annotation(companion)


def _retry(ctx: Context, value: str, who: str) -> str | None:
    phase = ctx.status.phase
    if phase not in ("RolledBack", "Failed"):
        return f"the Rollout is {phase}; retry applies after a rollback"
    restart(ctx, "Retried", f"retry requested{_by(who, RETRY)}{_note(value)}", actor=who)
    return None


def _abort(ctx: Context, value: str, who: str) -> str | None:
    phase = ctx.status.phase
    reason = f"aborted{_by(who, ABORT)}{_note(value)}"
    if phase == "RollingBack":
        rb = ctx.status.rollback
        if rb is not None and rb.mode == "immediate":
            return "already rolling back immediately"
        ctx.record("Aborted", reason, actor=who)
        rollback.escalate(ctx, reason, actor=who)
        return None
    if phase == "Succeeded":
        return _abort_after_success(ctx, reason, who)
    if phase not in ACTIVE:
        return f"the Rollout is {phase}; nothing to abort"
    ctx.event("Normal", "Aborted", reason)
    ctx.record("Aborted", reason, actor=who)
    rollback.start(ctx, ctx.spec.effective_rollback().mode, reason, actor=who)
    return None


def _abort_after_success(ctx: Context, reason: str, who: str) -> str | None:
    """A Succeeded Rollout whose legacy Deployment still exists rolls back by its own
    rollback spec, from where traffic is (100%): weight moves only onto ready legacy pods,
    and a router that scales grows legacy back before it shrinks the new side."""
    if ctx.obs.legacy_missing:
        name = ctx.spec.legacy.deployment
        return f"the legacy Deployment {name} no longer exists; nothing to roll back to"
    st = ctx.status
    st.step = max(0, len(ctx.plan) - 1)
    st.target_weight = max(st.target_weight, ctx.current_weight())
    if st.legacy_replicas is None or st.legacy_replicas == 0:
        st.legacy_replicas = ctx.obs.legacy_desired or st.legacy_replicas
    text = f"{reason} (after success; traffic returns to the legacy version)"
    ctx.event("Normal", "Aborted", text)
    ctx.record("Aborted", text, actor=who)
    rollback.start(ctx, ctx.spec.effective_rollback().mode, reason, actor=who)
    return None


def _promote(ctx: Context, value: str, who: str) -> str | None:
    st = ctx.status
    if st.phase not in STEPPING:
        return f"the Rollout is {st.phase}; promote applies while it progresses"
    if st.promoting:
        return "already promoting"
    st.promoting = True
    text = f"skipping the remaining steps to 100%, still gated{_by(who, PROMOTE)}{_note(value)}"
    ctx.event("Normal", "Promoted", text)
    ctx.record("Promoted", text, actor=who)
    return None


def _approve(ctx: Context, value: str, who: str) -> str | None:
    st = ctx.status
    index = parse_step_index(value)
    if index is None:
        return MSG_STEP_INDEX
    if st.phase not in STEPPING:
        return f"the Rollout is {st.phase}; there is no step to approve"
    if index != st.step:
        return f"step {index} is not the current step ({st.step})"
    if st.step >= len(ctx.plan) or not ctx.plan[st.step].needs_approval:
        return f"step {index} does not wait for approval"
    if st.approved_step == index:
        return f"step {index} is already approved"
    st.approved_step = index
    text = f"step {index} approved{_by(who, APPROVE)}"
    ctx.event("Normal", "Approved", text)
    ctx.record("Approved", text, actor=who)
    return None


def _by(who: str, key: str) -> str:
    return "" if who == key else f" by {who}"


def _note(value: str) -> str:
    return f": {value.strip()}" if value.strip() else ""


_HANDLERS: Final[dict[str, _Handler]] = {
    RETRY: _retry,
    ABORT: _abort,
    PROMOTE: _promote,
    APPROVE: _approve,
}
