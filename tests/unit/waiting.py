"""Waiting for a condition in async unit tests, rather than for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    """Return once ``check()`` holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
