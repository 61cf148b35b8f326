"""Bulkheads for blocking metric providers: a small thread pool of its own per provider.

The clients we wrap block, so their calls run in threads; but never in asyncio's default
executor, which the rest of the operator shares. Each provider address gets a
:class:`QueryPool`: a few named worker threads, a bounded backlog, and a hard deadline per
call. A hanging server can then only tie up its own pool, and so only delay the rounds of
the Rollouts that use it.

A thread cannot be cancelled. When a caller's deadline passes while its call is still
running, the call is *abandoned*: the caller gets :class:`QueryTimedOut` at once, and the
thread stays busy until the client's own (HTTP) timeout lets it go. While every worker is
held by an abandoned call, the pool is saturated and refuses new calls at once
(:class:`PoolSaturated`) instead of queueing them behind threads that may never return.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from segue.analysis.errors import PoolSaturated, QueryTimedOut

T = TypeVar("T")

QUERY_WORKERS: Final = 4
# Calls waiting for a worker, beyond which a pool refuses more: 16 gates x 2 versions x 8
# rounds. Waiting calls are also bounded in time by their round's deadline.
MAX_BACKLOG: Final = 256


@dataclass
class _Call:
    started: bool = False
    finished: bool = False
    abandoned: bool = False


class QueryPool:
    """A bounded pool of ``workers`` named threads for one provider.

    ``label`` names the provider in errors ("Prometheus at http://prom:9090"); threads are
    named ``segue-query-<host>_<n>``.
    """

    def __init__(
        self, label: str, *, workers: int = QUERY_WORKERS, max_backlog: int = MAX_BACKLOG
    ) -> None:
        if workers < 1 or max_backlog < 1:
            raise ValueError("a pool needs at least one worker and room for one call")
        self.label = label
        self.workers = workers
        self.max_backlog = max_backlog
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"segue-query-{_slug(label)}"
        )
        self._lock = threading.Lock()
        self._waiting = 0  # submitted, not started
        self._running = 0
        self._abandoned = 0  # running, but their caller has given up
        self._closed = False

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    @property
    def abandoned(self) -> int:
        """Calls still running after their caller gave up on them."""
        return self._abandoned

    @property
    def saturated(self) -> bool:
        """Every worker is held by an abandoned call: nothing new would start soon."""
        return self._abandoned >= self.workers

    @property
    def closed(self) -> bool:
        return self._closed

    def refusal(self) -> PoolSaturated | None:
        """Why a new call would be refused right now, or None."""
        if self._closed:
            return PoolSaturated(f"{self.label}: its query pool has been shut down")
        if self.saturated:
            return PoolSaturated(
                f"{self.label}: all {self.workers} query workers are still held by earlier "
                "queries that did not answer in time; not queueing more until one returns"
            )
        if self._waiting >= self.max_backlog:
            return PoolSaturated(
                f"{self.label}: {self._waiting} queries already wait for a query worker"
            )
        return None

    async def run(self, fn: Callable[[str], T], arg: str, *, deadline_s: float) -> T:
        """``fn(arg)`` on a worker of this pool.

        ``deadline_s`` counts from the moment a worker starts the call; the wait for a free
        worker is bounded by the caller (cancel the task: a call not yet started is then
        dropped). Raises :class:`PoolSaturated` without waiting when the pool refuses, and
        :class:`QueryTimedOut` when the deadline passes first.
        """
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        call = _Call()

        def mark_started() -> None:
            if not started.done():
                started.set_result(None)

        def work() -> T:
            with self._lock:
                self._waiting -= 1
                self._running += 1
                call.started = True
            # RuntimeError: the caller's loop is gone, and nobody waits for the result.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(mark_started)
            try:
                return fn(arg)
            finally:
                with self._lock:
                    self._running -= 1
                    call.finished = True
                    if call.abandoned:
                        self._abandoned -= 1

        def dropped(done: Future[T]) -> None:
            if done.cancelled():  # never started: ``work`` did not count it out
                with self._lock:
                    self._waiting -= 1

        with self._lock:
            refused = self.refusal()
            if refused is not None:
                raise refused
            self._waiting += 1
        try:
            future = self._executor.submit(work)
        except RuntimeError as e:  # shut down between the check and the submit
            with self._lock:
                self._waiting -= 1
            raise PoolSaturated(f"{self.label}: its query pool has been shut down") from e
        future.add_done_callback(dropped)
        result = asyncio.wrap_future(future, loop=loop)
        try:
            either: set[asyncio.Future[Any]] = {started, result}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if future.cancelled():
                raise PoolSaturated(f"{self.label}: its query pool has been shut down")
            try:
                async with asyncio.timeout(deadline_s):
                    return await result
            except TimeoutError:
                raise QueryTimedOut(f"{self.label} did not answer within {deadline_s:g}s") from None
        finally:
            if not result.done():
                result.cancel()  # drops the call if no worker has started it yet
            with self._lock:
                if call.started and not call.finished and not call.abandoned:
                    call.abandoned = True
                    self._abandoned += 1

    def shutdown(self) -> None:
        """Refuse new calls and drop waiting ones; never waits for running calls."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


def _slug(label: str) -> str:
    """A thread-name-friendly host from a label such as "Prometheus at http://prom:9090"."""
    m = re.search(r"://([^/?#]+)", label)
    text = m.group(1).rsplit("@", 1)[-1] if m else label
    return re.sub(r"[^A-Za-z0-9.:-]+", "-", text)[:40] or "provider"
