"""The Migration's engine: waves in order, rollback by scope, the rollback audit log.

``decide_migration`` is pure: it takes the Migration's spec and status, a view of every
Rollout in its namespace (``MemberView``), the time and the Migration's ``segue.dev/*``
annotations, and returns the new status, the actions (abort annotations to write on
members, Events, annotation removal) and when to be called again.

- Members: a wave's ``rollouts`` by name, then its ``selector``'s matches by name. A Rollout
  named twice (in two waves), owned by an older Migration, or missing is a problem: the
  Migration is Stalled (``InvalidMembers``) and starts no new wave until it is fixed.
- Waves: wave n+1 starts when every member of wave n is Succeeded and the wave's bake has
  passed, and (``approval: true``) ``segue.dev/approve=<n+1>`` is set. Starting a wave is a
  status write only: members of a wave not yet started are kept Waiting by their own
  reconciler, which reads the Migration's status.
- Rollback: a member of a started wave that rolls back on its own (a gate, a person's
  abort) opens a log entry ``rb-<n>``. ``service``: the Migration is Held while the member is
  rolled back; retrying it and its success lets the Migration go on. ``wave`` and
  ``migration``: the Migration writes ``segue.dev/abort`` on each affected member that is
  active or Succeeded and neither RollingBack nor RolledBack; ``migration`` scope goes wave by
  wave, latest first. The status is written before any annotation, so a restart re-writes
  exactly the aborts still missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from segue.api.duration import parse_duration
from segue.api.migration import (
    MAX_ROLLBACK_LOG,
    MemberStatus,
    MigrationPhase,
    MigrationSpec,
    MigrationStatus,
    RollbackRecord,
    RollbackScope,
    RollbackTrigger,
    WaveStatus,
)
from segue.api.status import Condition, ConditionStatus, HistoryEntry
from segue.api.text import MAX_NOTE_BYTES, annotation_mark, cap
from segue.engine.annotations import APPROVE, by, parse_step_index
from segue.engine.types import ClearAnnotation, EmitEvent, EventType

# Phases of a member Rollout, as the Migration reads them.
ROLLING_BACK: Final = "RollingBack"
ROLLED_BACK: Final = "RolledBack"
UNDONE: Final = frozenset({ROLLING_BACK, ROLLED_BACK})
# A member in one of these has moved traffic, or finished: an abort has something to undo.
ABORTABLE: Final = frozenset({"Progressing", "Paused", "AwaitingApproval", "Succeeded"})
# A member in one of these has moved nothing yet.
NOT_STARTED: Final = frozenset({None, "Pending", "Waiting"})
# The Migration's phases after a wave or migration scope rollback: nothing starts again.
FINISHED_BY_ROLLBACK: Final = frozenset({"RollingBack", "RolledBack", "Failed"})
MIN_REQUEUE_S: Final = 0.01
_RB_ID: Final = re.compile(r"rb-([0-9]{1,9})")


@dataclass(frozen=True)
class MemberView:
    """A Rollout of the Migration's namespace, as the watch last saw it.

    ``owner``: another Migration that owns this Rollout (an older one naming it), if any.
    ``abort``: its ``segue.dev/abort`` annotation. ``history``: the newest entries of its
    history (oldest first), for the gate numbers or the person behind a rollback."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    phase: str | None = None
    weight: int = 0
    rollback_reason: str | None = None
    rollback_started_at: datetime | None = None
    history: tuple[HistoryEntry, ...] = ()
    abort: str | None = None
    owner: str | None = None


@dataclass(frozen=True)
class AbortMember:
    """Write ``segue.dev/abort: value`` on the member Rollout ``name`` (after the status)."""

    name: str
    value: str


MigrationAction = AbortMember | EmitEvent | ClearAnnotation


@dataclass(frozen=True)
class MigrationDecision:
    status: MigrationStatus
    actions: tuple[MigrationAction, ...]
    requeue_after: float | None


@dataclass(frozen=True)
class Members:
    """The members of each wave (in spec order) and what is wrong with the membership."""

    waves: tuple[tuple[str, ...], ...]
    problems: tuple[str, ...]

    def wave_of(self, name: str) -> int | None:
        return next((i for i, names in enumerate(self.waves) if name in names), None)


def selected(spec: MigrationSpec, rollouts: Mapping[str, Mapping[str, str]]) -> set[str]:
    """Every Rollout the spec names or selects (``rollouts``: name -> labels)."""
    names: set[str] = set()
    for wave in spec.waves:
        names.update(wave.rollouts or [])
        if wave.selector is not None:
            want = wave.selector.match_labels.items()
            names.update(n for n, labels in rollouts.items() if want <= labels.items())
    return names


def resolve(name: str, spec: MigrationSpec, members: Mapping[str, MemberView]) -> Members:
    """Each wave's members; a Rollout named twice stays in its first wave only."""
    seen: dict[str, str] = {}
    problems: list[str] = []
    waves: list[tuple[str, ...]] = []
    for wave in spec.waves:
        names = list(wave.rollouts or [])
        if wave.selector is not None:
            want = wave.selector.match_labels.items()
            names += sorted(n for n, m in members.items() if want <= m.labels.items())
        kept: list[str] = []
        for member in dict.fromkeys(names):
            view = members.get(member)
            if member in seen:
                problems.append(
                    f"Rollout {member} is in waves {seen[member]} and {wave.name}; "
                    "a Rollout belongs to one wave"
                )
                continue
            seen[member] = wave.name
            if view is None:
                problems.append(f"Rollout {member} (wave {wave.name}) not found")
            elif view.owner is not None and view.owner != name:
                problems.append(
                    f"Rollout {member} (wave {wave.name}) already belongs to Migration "
                    f"{view.owner}; a Rollout belongs to at most one Migration"
                )
                continue
            kept.append(member)
        waves.append(tuple(kept))
    return Members(tuple(waves), tuple(problems))


@dataclass
class _Ctx:
    name: str
    spec: MigrationSpec
    status: MigrationStatus
    views: Mapping[str, MemberView]
    members: Members
    now: datetime
    actions: list[MigrationAction] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type_, reason, message))

    def phase_of(self, member: str) -> str | None:
        view = self.views.get(member)
        return view.phase if view else None

    def started(self, index: int) -> bool:
        return self.status.waves[index].started_at is not None


def decide_migration(
    name: str,
    spec: MigrationSpec,
    status: MigrationStatus | None,
    members: Mapping[str, MemberView],
    now: datetime,
    annotations: Mapping[str, str],
    generation: int = 0,
) -> MigrationDecision:
    """One decision for the Migration ``name``; ``members``: every Rollout of its namespace
    by name. Replaying the same observations changes nothing and emits nothing."""
    st = status.model_copy(deep=True) if status is not None else MigrationStatus()
    old_phase = st.phase
    old_stalled = st.condition("Stalled")
    ctx = _Ctx(name, spec, st, members, resolve(name, spec, members), now)
    _sync_waves(ctx)
    approve = _approval(annotations, st)
    _rollbacks(ctx)
    approved = _progress(ctx, approve[1] if approve else None)
    # Once more, for a wave that just started with a member already rolled back or Failed.
    _rollbacks(ctx)
    _progress(ctx, None)
    _answer_approval(ctx, annotations, approve, approved)
    st.observed_generation = generation
    _conditions(ctx, old_stalled)
    if st.phase != old_phase and st.phase is not None:
        _phase_event(ctx, old_phase)
    return MigrationDecision(
        status=st,
        actions=tuple(ctx.actions),
        requeue_after=min(ctx.requeue) if ctx.requeue else None,
    )


# -- waves ------------------------------------------------------------------------------


def _sync_waves(ctx: _Ctx) -> None:
    """One WaveStatus per spec wave (kept by index while the name matches), members as
    last seen."""
    old = ctx.status.waves
    waves: list[WaveStatus] = []
    for i, wave in enumerate(ctx.spec.waves):
        ws = old[i] if i < len(old) and old[i].name == wave.name else WaveStatus(name=wave.name)
        ws.members = [
            MemberStatus(
                name=m,
                phase=ctx.phase_of(m),
                weight=ctx.views[m].weight if m in ctx.views else None,
            )
            for m in ctx.members.waves[i]
        ]
        waves.append(ws)
    ctx.status.waves = waves
    ctx.status.wave = min(ctx.status.wave, len(waves) - 1)


def _progress(ctx: _Ctx, approve_index: int | None) -> bool:
    """Walk the waves as far as the members allow. Returns whether an approval was used."""
    st = ctx.status
    if st.phase in FINISHED_BY_ROLLBACK:
        _finish_rollback_phase(ctx)
        return False
    held = _held_members(ctx)
    if held:
        _hold(ctx, held)
        return False
    for ws in st.waves:
        if ws.phase in ("Held", "RollingBack", "RolledBack"):
            ws.phase = "Progressing" if ws.started_at else "Pending"
    used = False
    i = st.wave
    while True:
        if not ctx.started(i):
            if i > 0 and not _wave_done(ctx, i - 1):
                return used
            if ctx.members.problems:
                _set(
                    ctx,
                    "Pending",
                    f"not starting wave {i} ({st.waves[i].name}): "
                    + "; ".join(ctx.members.problems),
                )
                return used
            if ctx.spec.waves[i].approval:
                if approve_index != i or used:
                    _set(
                        ctx,
                        "AwaitingApproval",
                        f"wave {i} ({st.waves[i].name}) waits for approval: "
                        f"kubectl annotate migration {ctx.name} {APPROVE}={i}",
                    )
                    return used
                used = True
            _start_wave(ctx, i)
        if not _wave_done(ctx, i):
            return used
        if i == len(st.waves) - 1:
            _set(ctx, "Succeeded", f"all {len(st.waves)} waves succeeded")
            return used
        i += 1


def _start_wave(ctx: _Ctx, i: int) -> None:
    st = ctx.status
    ws = st.waves[i]
    ws.phase = "Progressing"
    ws.started_at = ctx.now
    st.wave = i
    members = ", ".join(ctx.members.waves[i]) or "no Rollouts"
    ctx.event("Normal", "WaveStarted", f"wave {i} ({ws.name}) started: {members}")
    _set(ctx, "Progressing", f"wave {i} ({ws.name}) started")


def _wave_done(ctx: _Ctx, i: int) -> bool:
    """Every member Succeeded and the bake passed; sets the wave's phase and the
    Migration's message on the way."""
    ws = ctx.status.waves[i]
    if ws.phase == "Succeeded":
        return True
    names = ctx.members.waves[i]
    waiting = [m for m in names if ctx.phase_of(m) != "Succeeded"]
    if waiting:
        ws.phase = "Progressing"
        ws.succeeded_at = ws.bake_until = None
        detail = ", ".join(f"{m} ({ctx.phase_of(m) or 'not found'})" for m in waiting)
        _set(ctx, "Progressing", f"wave {i} ({ws.name}): waiting for {detail}")
        return False
    if ws.succeeded_at is None:
        ws.succeeded_at = ctx.now
        bake = ctx.spec.waves[i].bake_time
        if bake is not None and parse_duration(bake).total_seconds() > 0:
            ws.bake_until = ctx.now + parse_duration(bake)
    if ws.bake_until is not None and ctx.now < ws.bake_until:
        ws.phase = "Baking"
        ctx.requeue.append(max(MIN_REQUEUE_S, (ws.bake_until - ctx.now).total_seconds()))
        until = ws.bake_until.isoformat().replace("+00:00", "Z")
        _set(ctx, "Baking", f"wave {i} ({ws.name}) succeeded; baking until {until}")
        return False
    ws.phase = "Succeeded"
    ctx.event("Normal", "WaveSucceeded", f"wave {i} ({ws.name}) succeeded")
    return True


def _held_members(ctx: _Ctx) -> list[str]:
    """Members of started waves that rolled back (or failed) on their own."""
    return [
        m
        for i, names in enumerate(ctx.members.waves)
        if ctx.started(i)
        for m in names
        if ctx.phase_of(m) in (ROLLING_BACK, ROLLED_BACK, "Failed")
    ]


def _hold(ctx: _Ctx, held: list[str]) -> None:
    st = ctx.status
    for i, names in enumerate(ctx.members.waves):
        if ctx.started(i) and any(m in held for m in names):
            st.waves[i].phase = "Held"
    detail = ", ".join(f"{m} ({ctx.phase_of(m)})" for m in held)
    text = (
        f"held: {detail}; later waves do not start until it is retried "
        f"(kubectl annotate rollout {held[0]} segue.dev/retry=now) and succeeds"
    )
    if st.phase != "Held":
        ctx.event("Warning", "DependencyRolledBack", f"Migration {ctx.name} {text}")
    _set(ctx, "Held", text)


def _finish_rollback_phase(ctx: _Ctx) -> None:
    """After a wave or migration scope rollback (or success): settle the phase."""
    st = ctx.status
    scoped = [r for r in st.rollbacks if r.scope != "service"]
    last = scoped[-1] if scoped else None
    if last is None or last.outcome == "InProgress":
        _set(ctx, "RollingBack", st.message or "rolling back")
        return
    for ws in st.waves:
        if ws.phase == "RollingBack":
            ws.phase = "RolledBack"
    if last.outcome == "Failed":
        _set(ctx, "Failed", f"rollback {last.id} failed: {last.message or ''}")
    else:
        _set(
            ctx,
            "RolledBack",
            f"rollback {last.id} ({last.scope} scope) completed: "
            f"{', '.join(last.members)} back on legacy",
        )


def _set(ctx: _Ctx, phase: MigrationPhase, message: str) -> None:
    ctx.status.phase = phase
    ctx.status.message = message


def _phase_event(ctx: _Ctx, old: MigrationPhase | None) -> None:
    st = ctx.status
    if st.phase == "Succeeded":
        ctx.event("Normal", "Succeeded", f"Migration {ctx.name}: {st.message}")


# -- rollbacks --------------------------------------------------------------------------


def _rollbacks(ctx: _Ctx) -> None:
    for trigger in _new_rollbacks(ctx):
        _open_rollback(ctx, trigger)
    for record in ctx.status.rollbacks:
        if record.outcome == "InProgress":
            _advance_rollback(ctx, record)


def _covered(ctx: _Ctx, member: str, view: MemberView) -> bool:
    """Whether the member's current rollback is already in the log: it triggered an entry
    (same start), or an entry that aborted it was open when its rollback began."""
    started = view.rollback_started_at
    for record in ctx.status.rollbacks:
        if member not in record.members:
            continue
        if record.trigger.rollout == member:
            if started is None or record.initiated_at == started:
                return True
            continue
        if started is None or (
            record.initiated_at <= started
            and (record.completed_at is None or started <= record.completed_at)
        ):
            return True
    return False


def _new_rollbacks(ctx: _Ctx) -> list[str]:
    """Members of started waves rolling back (or rolled back) that no entry explains."""
    found: list[str] = []
    for i, names in enumerate(ctx.members.waves):
        if not ctx.started(i):
            continue
        for m in names:
            view = ctx.views.get(m)
            if view is not None and view.phase in UNDONE and not _covered(ctx, m, view):
                found.append(m)
    return found


def _trigger(view: MemberView) -> RollbackTrigger:
    trigger = RollbackTrigger(rollout=view.name, reason=view.rollback_reason)
    for entry in reversed(view.history):
        if entry.gate is not None:
            trigger.gate = entry.gate
            trigger.value = entry.value
            trigger.legacy_value = entry.legacy_value
            trigger.bound = entry.bound
            trigger.actor = f"gate {entry.gate}"
            break
        if entry.event == "Aborted":
            trigger.actor = entry.actor
            break
    return trigger


def summary(trigger: RollbackTrigger) -> str:
    """The trigger in a few words: the gate and its numbers, or who aborted."""
    if trigger.gate is not None:
        value = "no data" if trigger.value is None else f"{trigger.value:g}"
        text = f"{trigger.rollout}: gate {trigger.gate} {value}"
        if trigger.bound:
            text += f" (bound {trigger.bound}"
            if trigger.legacy_value is not None:
                text += f", legacy {trigger.legacy_value:g}"
            text += ")"
        return text
    who = f" by {trigger.actor}" if trigger.actor else ""
    reason = f": {trigger.reason}" if trigger.reason else ""
    return cap(f"{trigger.rollout} rolled back{who}{reason}", MAX_NOTE_BYTES)


def _next_id(st: MigrationStatus) -> str:
    numbers = [int(m.group(1)) for r in st.rollbacks if (m := _RB_ID.fullmatch(r.id))]
    return f"rb-{max(numbers, default=0) + 1}"


def _affected(ctx: _Ctx, trigger: str, scope: RollbackScope) -> list[str]:
    """The members a rollback reaches, in the order they return to legacy: the trigger
    first, then its wave, then (migration scope) every earlier started wave, latest first."""
    if scope == "service":
        return [trigger]
    index = ctx.members.wave_of(trigger)
    assert index is not None
    if scope == "wave":
        waves = [index]
    else:
        waves = sorted((i for i in range(len(ctx.members.waves)) if ctx.started(i)), reverse=True)
    order = [trigger]
    for i in waves:
        for m in ctx.members.waves[i]:
            if m != trigger and ctx.phase_of(m) not in NOT_STARTED:
                order.append(m)
    # Keep each wave's members together, latest wave first, the trigger leading its wave.
    rank = {i: n for n, i in enumerate(waves)}
    return sorted(order, key=lambda m: rank.get(ctx.members.wave_of(m) or 0, 0))


def _open_rollback(ctx: _Ctx, member: str) -> None:
    st = ctx.status
    view = ctx.views[member]
    scope = ctx.spec.rollback_scope
    record = RollbackRecord(
        id=_next_id(st),
        scope=scope,
        trigger=_trigger(view),
        members=_affected(ctx, member, scope),
        initiated_at=view.rollback_started_at or ctx.now,
    )
    st.rollbacks.append(record)
    if len(st.rollbacks) > MAX_ROLLBACK_LOG:
        st.rollbacks = st.rollbacks[-MAX_ROLLBACK_LOG:]
    ctx.event(
        "Warning",
        "RollbackStarted",
        f"rollback {record.id} ({scope} scope) after {summary(record.trigger)}; "
        f"members: {', '.join(record.members)}",
    )
    if scope != "service":
        for i, names in enumerate(ctx.members.waves):
            if any(m in record.members for m in names):
                st.waves[i].phase = "RollingBack"
        _set(
            ctx,
            "RollingBack",
            f"rollback {record.id} ({scope} scope) after {summary(record.trigger)}",
        )


def abort_value(name: str, record: RollbackRecord) -> str:
    """The ``segue.dev/abort`` value the Migration writes on a member for ``record``."""
    text = (
        f"migration {name} rollback {record.id} ({record.scope} scope): {summary(record.trigger)}"
    )
    return cap(text, MAX_NOTE_BYTES)


def _refusal(view: MemberView, record: RollbackRecord) -> str | None:
    """Why the member refused this rollback's abort, from its history."""
    mark = f"rollback {record.id} "
    for entry in reversed(view.history):
        if entry.time < record.initiated_at:
            break
        if entry.event == "AnnotationIgnored" and mark in (entry.reason or ""):
            return entry.reason
    return None


def _advance_rollback(ctx: _Ctx, record: RollbackRecord) -> None:
    failures: list[str] = []
    for m in record.members:
        view = ctx.views.get(m)
        if view is None:
            failures.append(f"Rollout {m} no longer exists")
        elif view.phase == "Failed":
            failures.append(f"Rollout {m} is Failed")
        elif (why := _refusal(view, record)) is not None:
            failures.append(f"Rollout {m} refused the abort: {why}")
    if failures:
        record.outcome = "Failed"
        record.completed_at = ctx.now
        record.message = "; ".join(failures)
        ctx.event("Warning", "RollbackFailed", f"rollback {record.id} failed: {record.message}")
        return
    if all(ctx.phase_of(m) == ROLLED_BACK for m in record.members):
        record.outcome = "Completed"
        record.completed_at = ctx.now
        ctx.event(
            "Normal",
            "RollbackCompleted",
            f"rollback {record.id} ({record.scope} scope) completed: "
            f"{', '.join(record.members)} rolled back",
        )
        return
    if record.scope == "service":
        return  # the member rolls itself back
    value = abort_value(ctx.name, record)
    for m in _current_stage(ctx, record):
        view = ctx.views[m]
        write = AbortMember(m, value)
        if view.phase in ABORTABLE and view.abort != value and write not in ctx.actions:
            ctx.actions.append(write)


def _current_stage(ctx: _Ctx, record: RollbackRecord) -> list[str]:
    """The members to abort now: those of the latest wave in the entry with a member not
    yet RolledBack (one wave after another, in the entry's order)."""
    groups: dict[int, list[str]] = {}
    for m in record.members:
        groups.setdefault(ctx.members.wave_of(m) or 0, []).append(m)
    for names in groups.values():  # dicts keep insertion order: the entry's order
        if any(ctx.phase_of(m) != ROLLED_BACK for m in names):
            return names
    return []


# -- approvals and conditions -----------------------------------------------------------


def _approval(annotations: Mapping[str, str], st: MigrationStatus) -> tuple[str, int | None] | None:
    """A new ``segue.dev/approve`` (not handled yet): its mark and the wave it names."""
    handled = {k: v for k, v in (st.handled_annotations or {}).items() if k in annotations}
    st.handled_annotations = handled or None
    if APPROVE not in annotations:
        return None
    mark = annotation_mark(annotations[APPROVE])
    if handled.get(APPROVE) == mark:
        return None
    return mark, parse_step_index(annotations[APPROVE])


def _answer_approval(
    ctx: _Ctx,
    annotations: Mapping[str, str],
    approve: tuple[str, int | None] | None,
    approved: bool,
) -> None:
    st = ctx.status
    if APPROVE in annotations:
        ctx.actions.append(ClearAnnotation(APPROVE))
    if approve is None:
        return
    mark, index = approve
    value = cap(annotations[APPROVE], MAX_NOTE_BYTES)
    who = by(annotations, APPROVE)
    if approved:
        ctx.event("Normal", "Approved", f"wave {index} approved{who}")
    else:
        why = (
            "the value must be the index of the wave to approve: 1 to 3 ASCII digits (0-9)"
            if index is None
            else f"wave {index} is not waiting for approval (Migration is {st.phase})"
        )
        ctx.event("Warning", "AnnotationIgnored", f"{APPROVE}={value!r}{who} ignored: {why}")
    st.handled_annotations = {**(st.handled_annotations or {}), APPROVE: mark}


def _conditions(ctx: _Ctx, old_stalled: Condition | None) -> None:
    st = ctx.status
    phase = st.phase or "Pending"
    message = st.message or ""
    now = ctx.now
    new: list[Condition] = []

    def put(type_: str, value: ConditionStatus, reason: str, text: str) -> None:
        old = st.condition(type_)
        flipped = old is None or old.status != value
        new.append(
            Condition(
                type=type_,
                status=value,
                reason=reason,
                message=text,
                last_transition_time=now if flipped or old is None else old.last_transition_time,
                observed_generation=st.observed_generation,
            )
        )

    put("Ready", "True" if phase == "Succeeded" else "False", phase, message)
    problems = "; ".join(ctx.members.problems)
    if phase == "Held":
        stalled: tuple[ConditionStatus, str, str] = ("True", "DependencyRolledBack", message)
    elif phase in ("RolledBack", "Failed"):
        stalled = ("True", phase, message)
    elif problems:
        stalled = ("True", "InvalidMembers", problems)
    else:
        stalled = ("False", phase, "")
    put("Stalled", *stalled)
    working = stalled[0] == "False" and phase not in ("Succeeded",)
    put("Reconciling", "True" if working else "False", phase, message if working else "")
    # A missing member is often one applied together with the Migration and not yet seen:
    # the condition says so; an Event only for what a person must untangle (claims).
    claims = "; ".join(p for p in ctx.members.problems if not p.endswith(" not found"))
    if claims and (old_stalled is None or claims not in old_stalled.message):
        ctx.event("Warning", "InvalidMembers", f"Migration {ctx.name}: {claims}")
    st.conditions = new


def owners(
    migrations: Sequence[tuple[str, MigrationSpec]], rollouts: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """Which Migration owns each Rollout: the first of ``migrations`` (oldest first) that
    names or selects it."""
    owner: dict[str, str] = {}
    for name, spec in migrations:
        for member in selected(spec, rollouts):
            owner.setdefault(member, name)
    return owner
