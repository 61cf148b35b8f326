"""The commands that steer a Rollout by annotation (approve, abort, retry, pause, resume,
promote) and approve the next wave of a Migration.

Each command is split in two: a pure ``check_*`` function that reads a parsed Rollout and
either refuses (:class:`CliError`, with the reason) or returns the annotation change and the
sentence to print; and :func:`apply`, which reads, checks and writes with a resourceVersion
guard, so the check always holds for the state that was actually written against. The
operator re-checks everything on its side; checking here gives the person an immediate,
clear answer instead of a warning event later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from segue.api.text import annotation_mark
from segue.cli.errors import CliError
from segue.cli.kube import Conflict, Obj
from segue.cli.migration import MigrationView
from segue.cli.rollout import RolloutView, describe_step_at
from segue.engine.annotations import ABORT, APPROVE, COMPANIONS, PAUSE, PROMOTE, RETRY
from segue.engine.context import STEPPING_PHASES

_FINISHED: Final = ("Succeeded", "RolledBack", "Failed")
_ATTEMPTS: Final = 5


@dataclass(frozen=True)
class Change:
    """Annotations to write (None removes one) and what to tell the user. No annotations:
    nothing to do (already requested), which is not an error."""

    message: str
    annotations: Mapping[str, str | None] = field(default_factory=dict)


V = TypeVar("V", RolloutView, MigrationView)
Check = Callable[[V], Change]


class RolloutAccess(Protocol):
    """What :func:`apply_checked` needs of :class:`segue.cli.kube.Resource`."""

    def get(self, namespace: str, name: str) -> Obj: ...

    def patch_annotations(
        self,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        resource_version: str | None = None,
    ) -> Obj: ...


def _at(view: RolloutView) -> str:
    return f"step {view.status.step} ({view.status.weight}%)"


def _pending(view: RolloutView | MigrationView, key: str, value: str | None = None) -> str | None:
    """The value of a one-shot annotation still waiting for the operator, if any."""
    current = view.annotations.get(key)
    if current is None or (value is not None and current != value):
        return None
    handled = (view.status.handled_annotations or {}).get(key)
    # The operator remembers a long value by a mark (a digest), not the value itself.
    return None if handled in (current, annotation_mark(current)) else current


def check_approve(view: RolloutView, step: int | None = None) -> Change:
    st = view.status
    phase = st.phase
    if phase is None:
        raise CliError(
            f"rollout {view.ref} has no status yet (is the operator running?); "
            "nothing awaits approval"
        )
    current = view.current_step
    waiting = phase == "AwaitingApproval" or (
        phase in STEPPING_PHASES and current is not None and current.needs_approval
    )
    if not waiting:
        text = f"rollout {view.ref} is {phase} at step {st.step}; nothing awaits approval"
        upcoming = view.next_approval() if phase in STEPPING_PHASES else None
        if upcoming is not None:
            text += f" (the next approval is step {upcoming})"
        raise CliError(text)
    if step is not None and step != st.step:
        raise CliError(
            f"rollout {view.ref} waits for approval of step {st.step}, not step {step}; "
            "nothing approved"
        )
    what = f"step {st.step} ({describe_step_at(view, st.step)})"
    if st.approved_step == st.step:
        return Change(f"rollout {view.ref}: {what} is already approved")
    if _pending(view, APPROVE, str(st.step)) is not None:
        return Change(f"rollout {view.ref}: approval of {what} already requested")
    return Change(f"rollout {view.ref}: approved {what}", {APPROVE: str(st.step)})


def check_abort(view: RolloutView, reason: str) -> Change:
    st = view.status
    phase = st.phase
    if phase == "RollingBack":
        if st.rollback is None or st.rollback.mode == "immediate":
            raise CliError(f"rollout {view.ref} is already rolling back immediately")
        then = "the graceful rollback becomes immediate"
    elif phase == "Succeeded":
        mode = view.spec.effective_rollback().mode if view.spec else "as configured"
        then = (
            f"the operator rolls back ({mode}) to the legacy Deployment, "
            "or refuses if it no longer exists"
        )
    elif phase in _FINISHED:
        raise CliError(f"rollout {view.ref} is {phase}; nothing to abort")
    else:
        mode = view.spec.effective_rollback().mode if view.spec else "as configured"
        then = f"the operator rolls back ({mode})"
    if _pending(view, ABORT) is not None:
        return Change(f"rollout {view.ref}: abort already requested")
    because = f": {reason}" if reason else ""
    return Change(f"rollout {view.ref}: aborted at {_at(view)}{because}; {then}", {ABORT: reason})


def check_retry(view: RolloutView, token: str) -> Change:
    phase = view.status.phase
    if phase not in ("RolledBack", "Failed"):
        raise CliError(
            f"rollout {view.ref} is {view.phase}; retry applies after a rollback "
            "(RolledBack or Failed)"
        )
    if (pending := _pending(view, RETRY)) is not None:
        return Change(f"rollout {view.ref}: retry already requested ({RETRY}={pending})")
    return Change(
        f"rollout {view.ref}: retry requested; the plan starts over from step 0", {RETRY: token}
    )


def check_pause(view: RolloutView, reason: str) -> Change:
    phase = view.status.phase
    if phase in _FINISHED:
        raise CliError(f"rollout {view.ref} is {phase}; nothing to pause")
    if phase == "RollingBack":
        raise CliError(f"rollout {view.ref} is RollingBack; a rollback is never paused")
    if view.annotations.get(PAUSE) == reason:
        return Change(f"rollout {view.ref}: already paused by {PAUSE}")
    because = f": {reason}" if reason else ""
    return Change(
        f"rollout {view.ref}: paused at {_at(view)}{because}; "
        f"resume with: kubectl segue resume {view.name} -n {view.namespace}",
        {PAUSE: reason},
    )


def check_resume(view: RolloutView) -> Change:
    st = view.status
    if PAUSE not in view.annotations:
        if st.phase == "Paused" and st.paused_reason not in (None, "Manual"):
            raise CliError(
                f"rollout {view.ref} is Paused ({st.paused_reason}), not by {PAUSE}; "
                "it resumes by itself once the cause clears"
            )
        raise CliError(f"rollout {view.ref} is not paused by {PAUSE}; nothing to resume")
    return Change(f"rollout {view.ref}: resumed (removed {PAUSE})", {PAUSE: None})


def check_promote(view: RolloutView, token: str) -> Change:
    st = view.status
    if st.phase not in STEPPING_PHASES:
        raise CliError(
            f"rollout {view.ref} is {view.phase}; promote applies while it progresses "
            "(Progressing, Paused or AwaitingApproval)"
        )
    if st.promoting:
        return Change(f"rollout {view.ref}: already promoting to 100%")
    if (pending := _pending(view, PROMOTE)) is not None:
        return Change(f"rollout {view.ref}: promote already requested ({PROMOTE}={pending})")
    return Change(
        f"rollout {view.ref}: promoting from {_at(view)} straight to 100%; gates still apply",
        {PROMOTE: token},
    )


def check_approve_migration(view: MigrationView, wave: int | None = None) -> Change:
    """Approve the wave the Migration waits at (``wave``: only if it is that one)."""
    phase = view.status.phase
    if phase is None:
        raise CliError(
            f"migration {view.ref} has no status yet (is the operator running?); "
            "nothing awaits approval"
        )
    waiting = view.waiting_wave()
    if waiting is None:
        text = (
            f"migration {view.ref} is {phase} at wave {view.status.wave}; nothing awaits approval"
        )
        upcoming = view.next_approval()
        if upcoming is not None:
            text += f" (the next approval is wave {upcoming.index}, {upcoming.name})"
        raise CliError(text)
    if wave is not None and wave != waiting.index:
        raise CliError(
            f"migration {view.ref} waits for approval of wave {waiting.index} ({waiting.name}), "
            f"not wave {wave}; nothing approved"
        )
    what = f"wave {waiting.index} ({waiting.name})"
    if _pending(view, APPROVE, str(waiting.index)) is not None:
        return Change(f"migration {view.ref}: approval of {what} already requested")
    return Change(
        f"migration {view.ref}: approved {what}; it starts at the operator's next pass",
        {APPROVE: str(waiting.index)},
    )


def with_companions(
    annotations: Mapping[str, str | None], user: str | None
) -> dict[str, str | None]:
    """The annotations to write, each steering one with its companion naming ``user`` (the
    admission policy requires it where the API server does not write it itself); removing
    one removes its companion too. Without a user name, the companions are left alone."""
    out = dict(annotations)
    for key, value in annotations.items():
        companion = COMPANIONS.get(key)
        if companion is None:
            continue
        if value is None:
            out[companion] = None
        elif user is not None:
            out[companion] = user
    return out


def apply(
    rollouts: RolloutAccess,
    namespace: str,
    name: str,
    check: Check[RolloutView],
    user: str | None = None,
) -> Change:
    """:func:`apply_checked` for a Rollout."""
    return apply_checked(rollouts, namespace, name, RolloutView.from_object, check, user)


def apply_checked(
    objects: RolloutAccess,
    namespace: str,
    name: str,
    parse: Callable[[Mapping[str, Any]], V],
    check: Check[V],
    user: str | None = None,
    noun: str = "rollout",
) -> Change:
    """Read, check, write; on a conflicting concurrent change, read and check again.
    ``parse`` turns the object read into what ``check`` reads; ``user``: who runs the
    command, written into each companion annotation."""
    for _ in range(_ATTEMPTS):
        view = parse(objects.get(namespace, name))
        change = check(view)
        if not change.annotations:
            return change
        annotations = with_companions(change.annotations, user)
        try:
            objects.patch_annotations(namespace, name, annotations, view.resource_version)
        except Conflict:
            continue
        return change
    raise CliError(f"{noun} {namespace}/{name} keeps changing; try again")
