"""Annotations people set on a Rollout, and how the engine acts on them.

One-shot annotations (approve, abort, retry, promote) act once: the engine records each in
history and asks for its removal. Until the removal is observed, ``status.handledAnnotations``
remembers the value, so replaying the same observations never acts twice. ``pause`` is a
level: the Rollout stays paused while it is present.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from segue.api.phases import ACTIVE, STEPPING
from segue.api.text import MAX_NOTE_BYTES, annotation_mark, cap
from segue.engine import rollback
from segue.engine.context import Context
from segue.engine.restart import restart

PREFIX: Final = "segue.dev/"
APPROVE: Final = "segue.dev/approve"
ABORT: Final = "segue.dev/abort"
RETRY: Final = "segue.dev/retry"
PAUSE: Final = "segue.dev/pause"
PROMOTE: Final = "segue.dev/promote"
ONE_SHOT: Final = (RETRY, ABORT, PROMOTE, APPROVE)  # in the order they are handled

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
_Handler = Callable[[Context, str], str | None]


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
        if handled.get(key) != mark:
            ignored = _HANDLERS[key](ctx, value)
            if ignored is not None:
                text = f"{key}={value!r} ignored: {ignored}"
                ctx.event("Warning", "AnnotationIgnored", text)
                ctx.record("AnnotationIgnored", text, actor=key)
            handled[key] = mark
        ctx.clear_annotation(key)
    st.handled_annotations = handled or None
    ctx.manual_pause = PAUSE in annotations


def _retry(ctx: Context, value: str) -> str | None:
    phase = ctx.status.phase
    if phase not in ("RolledBack", "Failed"):
        return f"the Rollout is {phase}; retry applies after a rollback"
    restart(ctx, "Retried", f"retry requested{_note(value)}", actor=RETRY)
    return None


def _abort(ctx: Context, value: str) -> str | None:
    phase = ctx.status.phase
    reason = f"aborted{_note(value)}"
    if phase == "RollingBack":
        rb = ctx.status.rollback
        if rb is not None and rb.mode == "immediate":
            return "already rolling back immediately"
        ctx.record("Aborted", reason, actor=ABORT)
        rollback.escalate(ctx, reason, actor=ABORT)
        return None
    if phase not in ACTIVE:
        return f"the Rollout is {phase}; nothing to abort"
    ctx.event("Normal", "Aborted", reason)
    ctx.record("Aborted", reason, actor=ABORT)
    rollback.start(ctx, ctx.spec.effective_rollback().mode, reason, actor=ABORT)
    return None


def _promote(ctx: Context, value: str) -> str | None:
    st = ctx.status
    if st.phase not in STEPPING:
        return f"the Rollout is {st.phase}; promote applies while it progresses"
    if st.promoting:
        return "already promoting"
    st.promoting = True
    text = f"skipping the remaining steps to 100%, still gated{_note(value)}"
    ctx.event("Normal", "Promoted", text)
    ctx.record("Promoted", text, actor=PROMOTE)
    return None


def _approve(ctx: Context, value: str) -> str | None:
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
    ctx.event("Normal", "Approved", f"step {index} approved")
    ctx.record("Approved", f"step {index} approved", actor=APPROVE)
    return None


def _note(value: str) -> str:
    return f": {value.strip()}" if value.strip() else ""


_HANDLERS: Final[dict[str, _Handler]] = {
    RETRY: _retry,
    ABORT: _abort,
    PROMOTE: _promote,
    APPROVE: _approve,
}
