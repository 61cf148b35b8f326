"""Reading a Rollout's status.history: when each weight was confirmed, and how long each
step took beyond its hold."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from segue_testkit.scenario.waiting import parse_time


def confirmed_weights(history: Sequence[dict[str, Any]]) -> list[tuple[float, int]]:
    """(Unix time, weight) of every WeightSet entry: the router confirmed the weight."""
    return [(parse_time(h["time"]), int(h["weight"])) for h in history if h["event"] == "WeightSet"]


def finished_at(history: Sequence[dict[str, Any]], event: str = "Succeeded") -> float | None:
    """The Unix time of the last ``event`` entry, if any."""
    times = [parse_time(h["time"]) for h in history if h["event"] == event]
    return times[-1] if times else None


def step_overheads(history: Sequence[dict[str, Any]], hold_s: float) -> list[tuple[float, float]]:
    """For every hold between two confirmed weights: (the hold's end, the overhead), the
    overhead being the time from the hold's end (the earlier confirmation plus the hold)
    to the router confirming the next weight."""
    out = []
    for (held_from, _), (at, _) in itertools.pairwise(confirmed_weights(history)):
        end = held_from + hold_s
        out.append((end, at - end))
    return out
