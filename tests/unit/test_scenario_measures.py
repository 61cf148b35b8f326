"""The benchmarks' measurements: step overheads from a status history, a process's CPU
time and peak memory from /proc."""

from __future__ import annotations

import os
from typing import Any

import pytest

from segue_testkit.scenario import (
    confirmed_weights,
    cpu_seconds,
    finished_at,
    peak_rss_mib,
    step_overheads,
)

HISTORY: list[dict[str, Any]] = [
    {"event": "Started", "time": "2024-05-01T10:00:00Z"},
    {"event": "WeightSet", "weight": 25, "time": "2024-05-01T10:00:00.500Z"},
    {"event": "WeightSet", "weight": 50, "time": "2024-05-01T10:00:05.750Z"},
    {"event": "WeightSet", "weight": 100, "time": "2024-05-01T10:00:11Z"},
    {"event": "Succeeded", "time": "2024-05-01T10:00:11.100Z"},
]


def test_confirmed_weights_in_order() -> None:
    assert [w for _, w in confirmed_weights(HISTORY)] == [25, 50, 100]


def test_step_overheads_count_from_the_hold_end() -> None:
    steps = step_overheads(HISTORY, hold_s=5.0)
    assert [round(o, 3) for _, o in steps] == [0.25, 0.25]
    first_end, _ = steps[0]
    assert first_end == pytest.approx(confirmed_weights(HISTORY)[0][0] + 5.0)


def test_finished_at_is_the_last_entry_of_the_event() -> None:
    assert finished_at(HISTORY) == pytest.approx(confirmed_weights(HISTORY)[-1][0] + 0.1)
    assert finished_at(HISTORY, "RolledBack") is None


def test_own_process_cost() -> None:
    sum(i * i for i in range(200_000))  # some CPU time of our own
    assert cpu_seconds(os.getpid()) > 0
    assert 1 < peak_rss_mib(os.getpid()) < 100_000
