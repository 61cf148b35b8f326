"""Plain-text views of Migrations: the table, the live view of one Migration and its rollback
log.

Like :mod:`segue.cli.render`, everything is a pure function of parsed Migrations, the time and
a width, returning lines without escapes that stay readable at 80 columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from segue.api.migration import MemberStatus, RollbackRecord, RollbackTrigger
from segue.cli.migration import MigrationView, WaveView
from segue.cli.render import (
    DEFAULT_WIDTH,
    clock,
    countdown,
    human_age,
    labelled,
    number,
    one_line,
    table,
    timestamp,
    truncate,
)

MEMBER_BAR: Final = 20
_MEMBER: Final = " " * 7  # a member's indent under its wave
ROLLBACKS_IN_FRAME: Final = 5
SCOPES: Final = {
    "service": "a member's rollback rolls back only that member; later waves hold",
    "wave": "a member's rollback returns its whole wave to legacy",
    "migration": "a member's rollback returns every started wave to legacy, latest first",
}


def small_bar(weight: int | None, width: int = MEMBER_BAR) -> str:
    """``[#####...............]  25%``; ``[????]    ?`` while the weight is unknown."""
    if weight is None:
        return f"[{' ' * width}]    -"
    weight = max(0, min(100, weight))
    filled = round(width * weight / 100)
    return f"[{'#' * filled}{'.' * (width - filled)}] {weight:>3}%"


def wave_text(view: MigrationView) -> str:
    """The latest started wave, e.g. "1/3 medium" (index/number of waves)."""
    if view.status.phase is None:
        return "-"
    waves = view.waves
    current = view.wave_at(view.status.wave)
    name = f" {current.name}" if current is not None else ""
    return f"{view.status.wave}/{len(waves)}{name}" if waves else str(view.status.wave)


# --- get migrations: the table --------------------------------------------------------------


def migrations_table(
    views: Sequence[MigrationView],
    now: datetime,
    width: int | None = DEFAULT_WIDTH,
    all_namespaces: bool = False,
) -> list[str]:
    headers = ["NAME", "PHASE", "WAVE", "DONE", "ROLLBACKS", "AGE", "MESSAGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for v in views:
        done, known = v.member_count
        row = [
            v.name,
            v.raw_phase or "-",
            wave_text(v),
            f"{done}/{known}" if known else "-",
            str(len(v.status.rollbacks)),
            human_age(now - v.created) if v.created else "-",
            one_line(v.status.message),
        ]
        if all_namespaces:
            row.insert(0, v.namespace)
        rows.append(row)
    return table(headers, rows, width=width, flex=len(headers) - 1)


# --- the rollback log -------------------------------------------------------------------------


def trigger_text(trigger: RollbackTrigger) -> str:
    """``cart: gate error-rate = 0.12 (legacy 0), bound <= 0.05`` or ``cart: by alice``, then
    the reason."""
    parts = []
    if trigger.gate:
        numbers = f"gate {trigger.gate} = {number(trigger.value)}"
        if trigger.legacy_value is not None:
            numbers += f" (legacy {number(trigger.legacy_value)})"
        if trigger.bound:
            numbers += f", bound {trigger.bound}"
        parts.append(numbers)
    if trigger.actor and not (trigger.gate and trigger.actor == f"gate {trigger.gate}"):
        parts.append(f"by {trigger.actor}")
    # A gate's own reason repeats the numbers already shown.
    if trigger.reason and not (trigger.gate and trigger.reason.startswith(f"gate {trigger.gate}")):
        parts.append(one_line(trigger.reason))
    return f"{trigger.rollout}: {'; '.join(parts)}" if parts else trigger.rollout


def _when(record: RollbackRecord, full: bool) -> str:
    show = timestamp if full else clock
    text = show(record.initiated_at)
    if record.completed_at is not None:
        took = countdown(record.completed_at - record.initiated_at)
        text += f" -> {show(record.completed_at)} ({took})"
    return text


def rollback_lines(
    records: Sequence[RollbackRecord], width: int | None, full: bool = False
) -> list[str]:
    """One block per rollback: id, scope, outcome and times, then its trigger, members and
    message wrapped under a label."""
    room = width if width is not None else 10_000
    lines: list[str] = []
    for r in records:
        head = f"  {r.id}  {r.scope}  {r.outcome}  {_when(r, full)}"
        lines.append(truncate(head, room))
        details = [("trigger", trigger_text(r.trigger))]
        details.append(("members", ", ".join(r.members) or "-"))
        if r.message:
            details.append(("message", one_line(r.message)))
        for label, value in details:
            wrapped = labelled(label, value, room - 4)
            lines.extend(truncate("    " + w, room) for w in wrapped)
    return lines


def history_lines(view: MigrationView, width: int | None = DEFAULT_WIDTH) -> list[str]:
    """The whole rollback log, oldest first, with full times."""
    records = view.status.rollbacks
    if not records:
        return [f"migration {view.ref} has no rollbacks"]
    title = f"Rollbacks of migration {view.ref} ({len(records)}, oldest first)"
    return [title, *rollback_lines(records, width, full=True)]


# --- get migration NAME [--watch]: one frame -----------------------------------------------


def wave_state(view: MigrationView, wave: WaveView, now: datetime) -> str:
    """What a wave is doing, e.g. "baking, 3m12s left" or "waiting for approval"."""
    st = wave.status
    phase = wave.phase
    bake = wave.spec.bake_time if wave.spec is not None else None
    if not wave.started:
        waiting = view.waiting_wave()
        if waiting is not None and waiting.index == wave.index:
            return f"waiting for approval (segue.dev/approve={wave.index})"
        if wave.needs_approval:
            return "starts after approval"
        return f"then bake {bake}" if bake else ""
    if st is None:
        return ""
    if phase == "Baking" and st.bake_until is not None:
        return f"baking until {clock(st.bake_until)}, {countdown(st.bake_until - now)} left"
    if phase == "Succeeded" and st.succeeded_at is not None:
        baked = f", baked until {clock(st.bake_until)}" if st.bake_until is not None else ""
        return f"succeeded {clock(st.succeeded_at)}{baked}"
    started = f"started {clock(st.started_at)}" if st.started_at is not None else ""
    if phase == "Progressing" and bake:
        return f"{started}, then bake {bake}" if started else f"then bake {bake}"
    return started


def _members(wave: WaveView) -> list[MemberStatus]:
    """The members as the status shows them; before that, the names the spec gives."""
    if wave.status is not None and wave.status.members:
        return list(wave.status.members)
    names = (wave.spec.rollouts or []) if wave.spec is not None else []
    return [MemberStatus(name=n) for n in names]


def _wave_lines(view: MigrationView, now: datetime, width: int) -> list[str]:
    waves = view.waves
    if not waves:
        return [f"  no waves: {view.spec_error or 'no spec'}"]
    index_width = len(str(len(waves) - 1))
    names = [len(m.name) for w in waves for m in _members(w)] + [len("selector")]
    # Waves and members share the phase column: "  > 1  medium" and "       orders".
    column = max(6 + index_width + max(len(w.name) for w in waves), len(_MEMBER) + max(names))
    phase_width = max([len(w.phase) for w in waves] + [11])
    current = view.status.wave if view.status.phase is not None else None
    lines = []
    for w in waves:
        marker = ">" if w.index == current and w.started else " "
        state = wave_state(view, w, now)
        head = f"  {marker} {w.index:>{index_width}}  {w.name}".ljust(column)
        lines.append(truncate(f"{head}  {w.phase:<{phase_width}}  {state}".rstrip(), width))
        for m in _members(w):
            member = f"{_MEMBER}{m.name}".ljust(column)
            phase = m.phase or "-"
            lines.append(truncate(f"{member}  {phase:<12} {small_bar(m.weight)}", width))
        if w.spec is not None and w.spec.selector is not None:
            labels = ",".join(f"{k}={v}" for k, v in w.spec.selector.match_labels.items())
            if not (w.status and w.status.members):
                lines.append(
                    truncate(f"{_MEMBER}{'selector'}".ljust(column) + f"  {labels}", width)
                )
    return lines


def migration_frame(view: MigrationView, now: datetime, width: int = DEFAULT_WIDTH) -> list[str]:
    """The live view of one Migration: waves, members, and the rollback log."""
    width = max(width, 40)
    st = view.status
    title = f"Migration {view.ref}"
    stamp = timestamp(now)
    lines = [title + " " * max(1, width - len(title) - len(stamp)) + stamp]
    lines += labelled("Phase", view.raw_phase or "no status yet (is the operator running?)", width)
    if st.message:
        lines += labelled("Message", one_line(st.message), width)
    if view.spec is not None:
        scope = view.spec.rollback_scope
        lines += labelled("Scope", f"{scope}: {SCOPES[scope]}", width)
    if st.phase is not None:
        lines += labelled("Wave", wave_text(view), width)
    stalled = st.condition("Stalled")
    if stalled is not None and stalled.status == "True":
        lines += labelled("Stalled", f"{stalled.reason}: {one_line(stalled.message)}", width)
    waiting = view.waiting_wave()
    if waiting is not None:
        command = (
            f"kubectl segue approve migration {view.name} -n {view.namespace} "
            f"--wave {waiting.index}"
        )
        lines += labelled("Approve", command, width)
    if view.generation is not None and st.observed_generation not in (None, view.generation):
        lines += labelled("Note", f"spec generation {view.generation} not yet seen", width)
    for note in (view.status_error, view.spec_error):
        if note:
            lines += labelled("Note", note, width)

    lines += ["", f"Waves ({len(view.waves)})"]
    lines += _wave_lines(view, now, width)
    if st.rollbacks:
        shown = st.rollbacks[-ROLLBACKS_IN_FRAME:]
        lines += ["", f"Rollbacks (last {len(shown)} of {len(st.rollbacks)})"]
        lines += rollback_lines(shown, width)
    return [truncate(line, width) for line in lines]


def gone_frame(ref: str, now: datetime, width: int = DEFAULT_WIDTH) -> list[str]:
    return [
        truncate(f"Migration {ref}  {timestamp(now)}", width),
        truncate("deleted; waiting for it to be created again (Ctrl-C to exit)", width),
    ]
