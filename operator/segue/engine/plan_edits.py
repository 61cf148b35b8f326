"""Edits of the plan (spec.steps, risk, hold, analysis) made after traffic moved.

The chart's admission policy lets only holders of the "approve" permission make such an
edit and writes their user name into ``segue.dev/plan-edited-by``. The engine records each
one in history (``PlanChanged``, the editor as actor) with a Normal Event. It tells an edit
of the plan from other spec changes by ``status.planDigest``, not by the generation, and
records each digest once, so replaying the same observations records nothing new.
"""

from __future__ import annotations

from typing import Final

from segue.api.phases import TRAFFIC_MOVED
from segue.api.plan import plan_digest
from segue.api.status import Phase
from segue.api.text import MAX_NOTE_BYTES, cap
from segue.engine.annotations import PLAN_EDITED_BY
from segue.engine.context import Context

UNKNOWN: Final = "unknown"


def note(ctx: Context, old_phase: Phase | None, old_weight: int) -> None:
    """Keep ``status.planDigest`` current; record an edit made once traffic had moved
    (``old_phase``, ``old_weight``: as the status said before this decision)."""
    st = ctx.status
    digest = plan_digest(ctx.spec)
    previous, st.plan_digest = st.plan_digest, digest
    if previous is None or previous == digest:
        return  # first sight (a new Rollout, or one from before digests), or no edit
    if old_phase not in TRAFFIC_MOVED and old_weight == 0:
        return
    who = cap(ctx.obs.annotations.get(PLAN_EDITED_BY, "").strip(), MAX_NOTE_BYTES) or UNKNOWN
    text = (
        f"plan changed by {who} at step {st.step} ({old_weight}%); it now has {len(ctx.plan)} steps"
    )
    ctx.event("Normal", "PlanChanged", text)
    ctx.record("PlanChanged", text, actor=who)
