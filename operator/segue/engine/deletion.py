"""Deleting a Rollout: traffic goes back to legacy before Segue's finalizer is released.

- Nothing to undo (a phase in ``NOTHING_TO_UNDO``, or the router already reads 0): the
  finalizer is released at once; with a Normal Event only if this deletion moved traffic.
- Otherwise weight 0 is asked (immediately, whatever the rollback mode) when legacy can
  take it, and the finalizer is released once the router reads 0.
- Whatever happens, it is released ``RELEASE_AFTER`` after the deletion began (at once
  when waiting cannot help), with a Warning Event saying what was left on the new version.

Shared by ``decide`` and ``invalid_spec``: the caller says why traffic cannot move now.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from segue.api.phases import NOTHING_TO_UNDO
from segue.engine.context import Recorder, seconds

# 50 s, not 60: the controller's writes (status, router, finalizer) fit in the rest of
# the minute within which the finalizer is promised to be released.
RELEASE_AFTER: Final = timedelta(seconds=50)
# History entries: the first marks that this deletion moved traffic, the second that the
# closing Event (reason Deleted, Normal or Warning) was emitted, so a replayed decision
# does not emit it twice.
RETURNING: Final = "Deleting"
DELETED: Final = "Deleted"


def handle(
    rec: Recorder,
    *,
    since: datetime | None,
    router_weight: int | None,
    blocker: str | None,
    hopeless: bool = False,
) -> None:
    """``blocker``: why weight 0 cannot be asked now (None: it can; then ``router_weight``
    is known). ``hopeless``: waiting cannot help (no router can be built), release now."""
    st = rec.status
    events = {h.event for h in st.history}
    nothing_asked = router_weight is None and st.weight == 0 and st.target_weight == 0
    if st.phase in NOTHING_TO_UNDO or router_weight == 0 or nothing_asked:
        if RETURNING in events and DELETED not in events:
            text = "deleted; all traffic on legacy"
            rec.event("Normal", DELETED, text)
            rec.record(DELETED, text)
        rec.release_finalizer()
        return
    weight = router_weight if router_weight is not None else st.weight
    if blocker is None:
        if RETURNING not in events:
            rec.record(RETURNING, f"deleted at {weight}%: returning all traffic to legacy")
        st.target_weight = 0
        rec.set_weight(0)
        st.message = f"deleted: returning all traffic to legacy (router reads {weight}%)"
    else:
        st.message = f"deleted: traffic cannot return to legacy yet: {blocker} (new at {weight}%)"
    left = seconds((since or rec.now) + RELEASE_AFTER - rec.now)
    if left > 0 and not hopeless:
        rec.wake_in(left)
        return
    if DELETED not in events:
        why = blocker or "the router did not confirm weight 0"
        text = f"deleted; traffic could not be returned: {why}, the new version still has {weight}%"
        rec.event("Warning", DELETED, text)
        rec.record(DELETED, text)
    rec.release_finalizer()
