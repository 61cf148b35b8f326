"""A lane's request threads, handed out by priority: traffic writes first.

A lane (``kube.Lane``) has a fixed number of threads. When more requests wait than it has,
the next free thread goes to the waiting request of the lowest priority number, and among
equals to the one that came first. On the urgent lane ``kube`` gives writes that move
traffic (a router's ``set_weight``) priority 0 and everything else 1, so in a burst of
aborts the route writes of later aborts do not wait behind the status writes of earlier
ones: traffic goes back first, and the record of it follows. Other lanes use one priority:
arrival order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

TRAFFIC = 0
OTHER = 1


class Slots:
    """``size`` slots; ``taken(priority)`` holds one for the duration of its block."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a lane needs at least one slot")
        self._free = size
        self._order = itertools.count()
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []

    @property
    def waiting(self) -> int:
        return sum(1 for *_, f in self._waiting if not f.done())

    @asynccontextmanager
    async def taken(self, priority: int = OTHER) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._free > 0:  # a free slot means no one waits: a release hands it on first
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # handed a slot in the same breath as cancelled: pass it on
            raise

    def _release(self) -> None:
        while self._waiting:
            *_, future = heapq.heappop(self._waiting)
            if not future.done():  # a cancelled waiter's future is done: skip it
                future.set_result(None)
                return
        self._free += 1
