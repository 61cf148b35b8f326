"""Starting the plan over from step 0 (a new revision, or a retry after a rollback)."""

from __future__ import annotations

from segue.engine.context import Context


def restart(ctx: Context, event: str, reason: str, actor: str) -> None:
    """Back to step 0 with weight 0 as the first target, so traffic returns to the legacy
    version (onto ready pods only) before the plan is walked again."""
    st = ctx.status
    st.step = 0
    st.target_weight = 0
    st.step_started_at = None
    st.approved_step = None
    st.bake_until = None
    st.rollback = None
    st.promoting = None
    st.analysis_unreachable_since = None
    st.new_revision = ctx.obs.new_revision
    st.legacy_replicas = ctx.obs.legacy_desired
    for gate in st.gates:
        # lastEvaluated stays: the round that was already counted must not count again.
        gate.consecutive_failures = 0
        gate.consecutive_no_data = 0
        gate.verdict = None
        gate.value = None
        gate.legacy_value = None
        gate.message = None
    ctx.event("Normal", event, reason)
    ctx.record(event, reason, actor=actor)
    ctx.enter("Progressing", f"starting over from step 0: {reason}", actor=actor)
