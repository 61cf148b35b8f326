from __future__ import annotations

from datetime import timedelta

import pytest

from segue.cli import render
from segue.cli.rollout import RolloutView, describe_step_at
from tests.unit.cli_samples import NOW, history, iso, rollout, view


def _fits(lines: list[str], width: int = 80) -> None:
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, f"lines over {width} columns: {too_long}"
    assert not any("\x1b" in line for line in lines)


def _line(lines: list[str], needle: str) -> str:
    found = [line for line in lines if needle in line]
    assert found, f"no line with {needle!r} in:\n" + "\n".join(lines)
    return found[0]


# --- formatters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (200, "3m20s"),
        (600, "10m"),
        (2 * 3600, "120m"),
        (5 * 3600 + 720, "5h12m"),
        (20 * 3600, "20h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (12 * 86400, "12d"),
        (800 * 86400, "2y"),
    ],
)
def test_human_age(seconds: int, text: str) -> None:
    assert render.human_age(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.2, "1s"), (45, "45s"), (723, "12m03s"), (3900, "1h05m00s"), (-5, "0s")],
)
def test_countdown(seconds: float, text: str) -> None:
    assert render.countdown(timedelta(seconds=seconds)) == text


def test_bar() -> None:
    assert render.bar(25, 40) == "[" + "#" * 10 + "." * 30 + "]  25%"
    assert render.bar(0, 10) == "[..........]   0%"
    assert render.bar(100, 10) == "[##########] 100%"
    assert render.bar(250, 10) == "[##########] 100%"


def test_truncate_marks_the_cut() -> None:
    assert render.truncate("abcdefghij", 8) == "abcde..."
    assert render.truncate("abc", 8) == "abc"


# --- the table of Rollouts ----------------------------------------------------------------


def test_table_columns_and_values() -> None:
    lines = render.rollouts_table([view()], NOW, width=80)
    _fits(lines)
    assert lines[0].split() == ["NAME", "PHASE", "STEP", "WEIGHT", "AGE", "MESSAGE"]
    row = lines[1].split()
    assert row[:5] == ["checkout", "Progressing", "3/7", "25%", "60m"]


def test_table_cuts_long_messages_to_the_width() -> None:
    long = view(message="gate latency-p99 failed 3/3: " + "very long explanation " * 10)
    lines = render.rollouts_table([long], NOW, width=80)
    _fits(lines)
    assert lines[1].endswith("...")
    wide = render.rollouts_table([long], NOW, width=None)
    assert "very long explanation " * 9 in wide[1]


def test_table_all_namespaces_and_missing_status() -> None:
    fresh = RolloutView.from_object({**rollout(name="catalog", namespace="web"), "status": {}})
    lines = render.rollouts_table([view(), fresh], NOW, width=80, all_namespaces=True)
    _fits(lines)
    assert lines[0].split()[0] == "NAMESPACE"
    assert lines[2].split()[:5] == ["web", "catalog", "-", "-", "-"]


# --- the watch frame ----------------------------------------------------------------------


def test_frame_fits_80_columns_and_has_no_escapes() -> None:
    long_message = "rolling back: " + "gate error-rate failed with a long explanation " * 5
    for v in (
        view(),
        view(phase="AwaitingApproval", step=4, message=long_message),
        view(phase="RollingBack", message=long_message, history=history(40)),
        view(phase="Succeeded", step=7, weight=100, targetWeight=100),
        RolloutView.from_object({**rollout(), "status": {}}),
    ):
        _fits(render.watch_frame(v, NOW, 80))


def test_frame_header_weight_bar_and_phase() -> None:
    lines = render.watch_frame(view(), NOW, 80)
    assert lines[0].startswith("Rollout shop/checkout")
    assert lines[0].endswith("2026-03-01 12:10:00Z")
    assert _line(lines, "Phase").split() == ["Phase", "Progressing"]
    assert "step 3: holding at 25%" in _line(lines, "Message")
    assert _line(lines, "Weight").endswith("[" + "#" * 10 + "." * 30 + "]  25%")


def test_frame_marks_the_current_step_with_its_countdown() -> None:
    lines = render.watch_frame(view(), NOW, 80)
    current = [line for line in lines if line.startswith("  > ")]
    assert len(current) == 1
    assert current[0].split() == [">", "3", "pause", "30m", "20m00s", "left"]
    assert _line(lines, "  2  setWeight 25").endswith("done")
    assert _line(lines, "  4  approval").rstrip().endswith("approval")
    assert "3/7  pause 30m: 20m00s left" in _line(lines, "Step")
    # The countdown moves with the clock.
    later = render.watch_frame(view(), NOW + timedelta(seconds=61), 80)
    assert "18m59s left" in _line(later, "  > 3")


def test_frame_shows_each_step_kind() -> None:
    lines = render.watch_frame(view(), NOW, 80)
    for text in ("setWeight 5", "pause 10m", "setWeight 25", "pause 30m", "approval"):
        _line(lines, text)
    _line(lines, "setWeight 100")  # the plan's implicit last step


def test_frame_hold_over_and_paused() -> None:
    over = view(stepStartedAt=iso(NOW - timedelta(hours=1)))
    assert "hold over" in _line(render.watch_frame(over, NOW, 80), "  > 3")
    paused = view(phase="Paused", pausedReason="Manual")
    assert "(paused: Manual)" in _line(render.watch_frame(paused, NOW, 80), "  > 3")


def test_frame_gates_show_value_bound_and_verdict() -> None:
    lines = render.watch_frame(view(), NOW, 80)
    assert _line(lines, "GATE").split() == ["GATE", "VALUE", "LEGACY", "BOUND", "VERDICT", "FAILS"]
    error_rate = _line(lines, "error-rate").split()
    assert error_rate == ["error-rate", "0.0123", "0.011", "<=", "0.05", "Pass", "0/1"]
    latency = _line(lines, "latency-p99")
    for part in ("no data", "0.2", "<= 2x legacy", "Inconclusive", "0/3"):
        assert part in latency
    # Why a gate does not pass is on the next line.
    assert "no data for the new version yet" in lines[lines.index(latency) + 1]


def test_frame_history_shows_the_last_five() -> None:
    lines = render.watch_frame(view(history=history(12)), NOW, 80)
    title = _line(lines, "History")
    assert title == "History (last 5 of 12)"
    rows = lines[lines.index(title) + 2 :]
    assert len(rows) == 5
    assert "entry 11" in rows[-1]
    assert "entry 6" not in "\n".join(lines)


def test_frame_awaiting_approval_says_how_to_approve() -> None:
    lines = render.watch_frame(view(phase="AwaitingApproval", step=4), NOW, 80)
    assert "waiting for approval" in _line(lines, "  > 4  approval")
    assert "4/7  approval before setWeight 50" in _line(lines, "Step")
    assert "kubectl segue approve checkout -n shop" in _line(lines, "Approve")


def test_frame_succeeded_has_every_step_done() -> None:
    v = view(phase="Succeeded", step=7, weight=100, targetWeight=100, message="all traffic")
    lines = render.watch_frame(v, NOW, 80)
    assert not [line for line in lines if line.startswith("  > ")]
    plan = lines[lines.index("Plan (7 steps)") + 1 : lines.index("Plan (7 steps)") + 8]
    assert all(line.endswith("done") for line in plan)


def test_frame_graceful_rollback_counts_down() -> None:
    rb = {"mode": "graceful", "fromWeight": 25, "startedAt": iso(NOW - timedelta(minutes=2))}
    v = view(phase="RollingBack", weight=15, targetWeight=15, rollback={**rb, "reason": "abort"})
    lines = render.watch_frame(v, NOW, 80)
    assert "graceful from 25% at 12:08:00Z, 3m00s left: abort" in _line(lines, "Rollback")
    assert "stopped: rolling back" in _line(lines, "  > 3")


def test_frame_long_plan_shows_a_window_around_the_current_step() -> None:
    steps = [{"setWeight": w} for w in range(1, 31)]
    lines = render.watch_frame(view(steps=steps, step=20, totalSteps=30), NOW, 80)
    _fits(lines)
    assert _line(lines, "earlier steps").strip() == "... 17 earlier steps"
    assert _line(lines, "more step").strip() == "... 2 more steps"  # 31 with setWeight 100
    assert _line(lines, "  > 20").split()[:3] == [">", "20", "setWeight"]


def test_frame_survives_a_status_from_a_newer_operator() -> None:
    v = view(phase="Hibernating", newField={"x": 1})
    lines = render.watch_frame(v, NOW, 80)
    assert "status fields not understood by this CLI: phase" in "\n".join(lines)
    assert _line(lines, "Phase").split() == ["Phase", "Hibernating"]
    assert _line(lines, "error-rate")  # the rest of the status is still shown


def test_frame_without_status_says_so() -> None:
    v = RolloutView.from_object({**rollout(), "status": {}})
    lines = render.watch_frame(v, NOW, 80)
    assert "no status yet" in _line(lines, "Phase")
    assert not [line for line in lines if line.startswith("  > ")]


def test_describe_step_names_what_an_approval_gates() -> None:
    v = view()
    assert describe_step_at(v, 4) == "approval before setWeight 50"
    assert describe_step_at(v, 1) == "pause 10m"
    assert describe_step_at(v, 9) == "end of plan"


# --- history ------------------------------------------------------------------------------


def test_history_table_wraps_details_at_80_columns() -> None:
    entries = [
        *history(2),
        {
            "time": iso(NOW),
            "step": 3,
            "weight": 25,
            "event": "RollingBack",
            "reason": "gate error-rate failed 1/1: the error rate of the new version is high",
            "actor": "segue",
            "gate": "error-rate",
            "value": 0.071,
            "legacyValue": 0.01,
            "bound": "<= 0.05",
        },
        {
            "time": iso(NOW),
            "step": 3,
            "weight": 0,
            "event": "Aborted",
            "reason": "aborted: p99",
            "actor": "segue.dev/abort",
        },
    ]
    lines = render.history_table(view(history=entries), 80)
    _fits(lines)
    assert lines[0].split() == ["TIME", "STEP", "WEIGHT", "EVENT", "DETAIL"]
    text = "\n".join(lines)
    assert "2026-03-01 12:10:00Z" in text
    assert "gate error-rate = 0.071 (legacy 0.01)," in " ".join(text.split())
    assert "aborted: p99; by segue.dev/abort" in " ".join(text.split())


def test_history_table_empty() -> None:
    assert render.history_table(view(history=[]), 80) == [
        "rollout shop/checkout has no history yet"
    ]
