"""Plain-text views: the Rollouts table, the history table and the ``get --watch`` frame.

Everything here is a pure function of parsed Rollouts, the time and a width, returning lines
without ANSI escapes (the terminal handling lives in :mod:`segue.cli.watch`). Every view is
laid out to stay readable at 80 columns.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from segue.api import GateStatus, HistoryEntry
from segue.cli.rollout import RolloutView, describe_step, describe_step_at

DEFAULT_WIDTH: Final = 80
BAR_WIDTH: Final = 40
PLAN_WINDOW: Final = 12  # plans longer than this show the steps around the current one
HISTORY_IN_FRAME: Final = 5
ELLIPSIS: Final = "..."
_GAP: Final = "  "
_STEPPING: Final = frozenset({"Progressing", "Paused", "AwaitingApproval"})
_NOT_STARTED: Final = frozenset({"Pending", "Waiting"})


# --- small formatters -------------------------------------------------------------------


def one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def truncate(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return text[:width]
    return text[: width - len(ELLIPSIS)] + ELLIPSIS


def human_age(delta: timedelta) -> str:
    """Like kubectl's AGE column: 45s, 3m20s, 42m, 5h12m, 20h, 3d4h, 12d, 2y."""
    s = max(0, int(delta.total_seconds()))
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 730:
        return f"{d}d"
    return f"{d // 365}y"


def countdown(delta: timedelta) -> str:
    """Exact to the second, for holds: 45s, 12m03s, 1h05m00s."""
    s = max(0, int(delta.total_seconds() + 0.999))  # round up: "0s left" only at the end
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{sec:02d}s"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{sec}s"


def clock(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%H:%M:%SZ")


def timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def bar(weight: int, width: int = BAR_WIDTH) -> str:
    """``[##########..............................]  25%``"""
    weight = max(0, min(100, weight))
    filled = round(width * weight / 100)
    return f"[{'#' * filled}{'.' * (width - filled)}] {weight:>3}%"


def number(value: float | None) -> str:
    if value is None:
        return "no data"
    return f"{value:.4g}"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    width: int | None = None,
    flex: int | None = None,
    indent: str = "",
) -> list[str]:
    """Left-aligned columns; when ``width`` is given, the ``flex`` column (by index) is cut
    so each line fits."""
    body = [[one_line(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    if width is not None and flex is not None:
        others = sum(w for i, w in enumerate(widths) if i != flex)
        room = width - len(indent) - others - len(_GAP) * (len(widths) - 1)
        widths[flex] = max(len(headers[flex]), min(widths[flex], room))
    lines = []
    for row in [list(headers), *body]:
        cells = [truncate(c, w).ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append((indent + _GAP.join(cells)).rstrip())
    return lines


# --- get: the table of Rollouts ---------------------------------------------------------


def step_text(view: RolloutView) -> str:
    if view.status.phase is None:
        return "-"
    total = view.total_steps
    return f"{view.status.step}/{total}" if total else str(view.status.step)


def rollouts_table(
    views: Sequence[RolloutView],
    now: datetime,
    width: int | None = DEFAULT_WIDTH,
    all_namespaces: bool = False,
) -> list[str]:
    headers = ["NAME", "PHASE", "STEP", "WEIGHT", "AGE", "MESSAGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for v in views:
        row = [
            v.name,
            v.raw_phase or "-",
            step_text(v),
            f"{v.status.weight}%" if v.status.phase else "-",
            human_age(now - v.created) if v.created else "-",
            one_line(v.status.message),
        ]
        if all_namespaces:
            row.insert(0, v.namespace)
        rows.append(row)
    return table(headers, rows, width=width, flex=len(headers) - 1)


# --- history ----------------------------------------------------------------------------


def history_detail(entry: HistoryEntry) -> str:
    """The reason, who acted when it was not the operator, and the numbers behind a gate."""
    parts = [one_line(entry.reason)] if entry.reason else []
    if entry.actor and entry.actor != "segue":
        parts.append(f"by {entry.actor}")
    if entry.gate:
        numbers = f"gate {entry.gate} = {number(entry.value)}"
        if entry.legacy_value is not None:
            numbers += f" (legacy {number(entry.legacy_value)})"
        if entry.bound:
            numbers += f", bound {entry.bound}"
        parts.append(numbers)
    return "; ".join(parts)


def history_table(view: RolloutView, width: int | None = DEFAULT_WIDTH) -> list[str]:
    """The whole audit trail, oldest first; details wrap instead of being cut, because this
    is where people look for why something happened."""
    headers = ["TIME", "STEP", "WEIGHT", "EVENT", "DETAIL"]
    rows = [
        [timestamp(h.time), str(h.step), f"{h.weight}%", h.event, history_detail(h)]
        for h in view.status.history
    ]
    if not rows:
        return [f"rollout {view.ref} has no history yet"]
    if width is None:
        return table(headers, rows)
    lead = table(headers[:4], [r[:4] for r in rows])
    lead_width = max(len(line) for line in lead[1:]) if len(lead) > 1 else 0
    lead_width = max(lead_width, len(lead[0]))
    room = max(20, width - lead_width - len(_GAP))
    lines = [lead[0].ljust(lead_width) + _GAP + headers[-1]]
    for prefix, row in zip(lead[1:], rows, strict=True):
        wrapped = textwrap.wrap(row[-1], room) or [""]
        lines.append((prefix.ljust(lead_width) + _GAP + wrapped[0]).rstrip())
        lines.extend(" " * (lead_width + len(_GAP)) + more for more in wrapped[1:])
    return lines


# --- get --watch: one frame -------------------------------------------------------------


def labelled(label: str, value: str, width: int) -> list[str]:
    """``Label    value`` with the value wrapped under itself (at most three lines)."""
    pad = 10
    wrapped = textwrap.wrap(value, max(20, width - pad)) or [""]
    if len(wrapped) > 3:
        wrapped = [*wrapped[:2], truncate(" ".join(wrapped[2:]), max(20, width - pad))]
    lines = [f"{label:<{pad}}{wrapped[0]}"]
    lines.extend(" " * pad + line for line in wrapped[1:])
    return lines


def current_state(view: RolloutView, now: datetime) -> str:
    """What the current step is doing right now, e.g. "12m03s left" or "waiting for
    approval"."""
    st = view.status
    step = view.current_step
    phase = st.phase
    if step is None or phase is None:
        return ""
    if phase in ("RollingBack", "RolledBack", "Failed"):
        return {"RollingBack": "stopped: rolling back", "RolledBack": "rolled back"}.get(
            phase, "failed"
        )
    if phase in _NOT_STARTED:
        return "not started" if phase == "Pending" else "waiting for dependencies"
    if phase == "Succeeded":
        return "done"
    if step.set_weight is not None:
        state = f"moving traffic to {step.set_weight}% (router reads {st.weight}%)"
    elif step.needs_approval:
        if st.approved_step == st.step:
            state = "approved; waiting for a passing analysis round"
        elif phase == "AwaitingApproval":
            state = "waiting for approval"
        else:
            state = "needs approval"
    else:
        left = view.hold_remaining(now)
        if left is None:
            state = f"holds {step.pause.duration if step.pause else ''}"
        elif left > timedelta(0):
            state = f"{countdown(left)} left"
        else:
            state = "hold over; waiting for a passing analysis round"
    if phase == "Paused":
        state += f" (paused: {st.paused_reason or 'Manual'})"
    return state


def _plan_lines(view: RolloutView, now: datetime, width: int) -> list[str]:
    st = view.status
    plan = view.plan
    if not plan:
        return [f"  cannot expand the plan: {view.spec_error or 'no spec'}"]
    done_all = st.phase == "Succeeded"
    current = st.step if st.phase is not None and not done_all else None
    first, last = 0, len(plan)
    if len(plan) > PLAN_WINDOW:
        anchor = min(current if current is not None else len(plan), len(plan) - 1)
        first = max(0, min(anchor - 3, len(plan) - PLAN_WINDOW))
        last = first + PLAN_WINDOW
    desc_width = max(len(describe_step(s)) for s in plan)
    index_width = len(str(len(plan) - 1))
    lines = []
    if first:
        lines.append(f"     ... {first} earlier step{'s' if first > 1 else ''}")
    for i in range(first, last):
        marker = ">" if i == current else " "
        if done_all or (current is not None and i < current):
            state = "done"
        elif i == current:
            state = current_state(view, now)
        else:
            state = ""
        line = f"  {marker} {i:>{index_width}}  {describe_step(plan[i]):<{desc_width}}  {state}"
        lines.append(truncate(line.rstrip(), width))
    if last < len(plan):
        more = len(plan) - last
        lines.append(f"     ... {more} more step{'s' if more > 1 else ''}")
    return lines


def _gate_lines(gates: Sequence[GateStatus], width: int) -> list[str]:
    rows = []
    for g in gates:
        fails = f"{g.consecutive_failures}/{g.failure_limit}" if g.failure_limit else "-"
        legacy = number(g.legacy_value) if g.legacy_value is not None else "-"
        value = number(g.value) if g.verdict is not None or g.value is not None else "-"
        rows.append([g.name, value, legacy, g.bound or "-", g.verdict or "pending", fails])
    lines = table(
        ["GATE", "VALUE", "LEGACY", "BOUND", "VERDICT", "FAILS"],
        rows,
        width=width,
        flex=3,
        indent="  ",
    )
    out = [lines[0]]
    for g, line in zip(gates, lines[1:], strict=True):
        out.append(line)
        if g.verdict not in (None, "Pass") and g.message:
            out.append(truncate(f"    {one_line(g.message)}", width))
    return out


def _history_lines(view: RolloutView, now: datetime, width: int) -> list[str]:
    recent = view.status.history[-HISTORY_IN_FRAME:]
    rows = [
        [human_age(now - h.time), str(h.step), f"{h.weight}%", h.event, history_detail(h)]
        for h in recent
    ]
    return table(["AGE", "STEP", "WEIGHT", "EVENT", "DETAIL"], rows, width, flex=4, indent="  ")


def watch_frame(view: RolloutView, now: datetime, width: int = DEFAULT_WIDTH) -> list[str]:
    """The live view of one Rollout: where it is, what it waits for, how healthy it is."""
    width = max(width, 40)
    st = view.status
    title = f"Rollout {view.ref}"
    stamp = timestamp(now)
    lines = [title + " " * max(1, width - len(title) - len(stamp)) + stamp]
    phase = view.raw_phase or "no status yet (is the operator running?)"
    if st.phase == "Paused" and st.paused_reason:
        phase += f" ({st.paused_reason})"
    lines += labelled("Phase", phase, width)
    if st.message:
        lines += labelled("Message", one_line(st.message), width)
    lines.append(f"{'Weight':<10}{bar(st.weight, min(BAR_WIDTH, width - 17))}")
    if st.target_weight != st.weight:
        lines[-1] += f" -> {st.target_weight}%"
    if st.phase is not None and st.phase != "Succeeded":
        step = f"{step_text(view)}  {describe_step_at(view, st.step)}"
        state = current_state(view, now)
        lines += labelled("Step", f"{step}: {state}" if state else step, width)
    if st.phase == "Succeeded":
        lines += labelled("Step", f"{step_text(view)}  all steps done", width)
    if st.rollback is not None and st.phase in ("RollingBack", "RolledBack"):
        rb = st.rollback
        text = f"{rb.mode} from {rb.from_weight}% at {clock(rb.started_at)}"
        left = view.rollback_remaining(now)
        if st.phase == "RollingBack" and left:
            text += f", {countdown(left)} left"
        lines += labelled("Rollback", f"{text}: {one_line(rb.reason)}", width)
    if st.phase == "AwaitingApproval":
        command = f"kubectl segue approve {view.name} -n {view.namespace}"
        lines += labelled("Approve", command, width)
    if view.generation is not None and st.observed_generation not in (None, view.generation):
        lines += labelled("Note", f"spec generation {view.generation} not yet seen", width)
    for note in (view.status_error, view.spec_error):
        if note:
            lines += labelled("Note", note, width)

    lines += ["", f"Plan ({len(view.plan)} steps)" if view.plan else "Plan"]
    lines += _plan_lines(view, now, width)
    if st.gates:
        interval = view.spec.analysis.interval if view.spec and view.spec.analysis else None
        lines += ["", f"Gates (analysis every {interval})" if interval else "Gates"]
        if st.analysis_unreachable_since is not None:
            lines.append(
                truncate(
                    f"  analysis unreachable since {clock(st.analysis_unreachable_since)}", width
                )
            )
        lines += _gate_lines(st.gates, width)
    if st.history:
        shown = min(len(st.history), HISTORY_IN_FRAME)
        lines += ["", f"History (last {shown} of {len(st.history)})"]
        lines += _history_lines(view, now, width)
    return [truncate(line, width) for line in lines]


def gone_frame(ref: str, now: datetime, width: int = DEFAULT_WIDTH) -> list[str]:
    return [
        truncate(f"Rollout {ref}  {timestamp(now)}", width),
        truncate("deleted; waiting for it to be created again (Ctrl-C to exit)", width),
    ]
