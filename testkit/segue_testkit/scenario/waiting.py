"""Waiting for conditions, and summarising measured durations."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, get: Callable[[], T], ok: Callable[[T], bool], timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = get()
        if ok(last):
            return last
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile, linearly interpolated between the closest ranks."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def spread(values: Sequence[float]) -> str:
    """p50, p99, min and max of a sample, in seconds, and its size."""
    if not values:
        return "no samples"
    return (
        f"p50 {percentile(values, 50):.3f}s  p99 {percentile(values, 99):.3f}s  "
        f"min {min(values):.3f}s  max {max(values):.3f}s  (n={len(values)})"
    )


def parse_time(value: str) -> float:
    """An RFC 3339 time as Kubernetes and Segue's status write it, as a Unix time."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def settled(
    read: Callable[[], dict[str, float]], quiet_s: float = 1.0, timeout: float = 15.0
) -> dict[str, float]:
    """A reading of request counts once they have not changed for ``quiet_s`` (Events are
    posted a little after the writes they describe), or the last one after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = read()
        if now == last:
            return now
        last = now
    return last
