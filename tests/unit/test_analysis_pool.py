"""Bulkheads: every provider's queries run on a small pool of its own, with deadlines.

Real HTTP on loopback: a server that accepts connections and never answers, and a healthy
one that answers like Prometheus. Time bounds here are generous on purpose; what they tell
apart is "bounded by the deadline" from "as long as the hang".
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import pytest

from segue.analysis.clients import PooledClient
from segue.analysis.errors import PoolSaturated, QueryTimedOut
from segue.analysis.pool import QueryPool
from segue.analysis.providers.base import RoundContext
from segue.analysis.providers.prometheus.client import PrometheusSettings
from segue.analysis.providers.prometheus.runtime import client_for_settings, evaluate_round
from segue.api.spec import Gate
from segue.engine import GateRound
from tests.unit.conftest import NoDefaultExecutor
from tests.unit.waiting import until

pytestmark = pytest.mark.usefixtures("no_cached_providers")

T = TypeVar("T")
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
CTX = RoundContext("shop", "checkout", "v1", "v2", "30s", 10)


def gates(n: int) -> list[Gate]:
    return [
        Gate(name=f"g{i}", query=f'sum(x{i}{{v="{{{{ version }}}}"}})', max=2) for i in range(n)
    ]


@pytest.fixture
def healthy() -> Iterator[str]:
    """Answers every instant query with the one-sample vector 1."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]},
            }
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Blocking:
    """A provider whose queries hold their worker until released, ignoring any timeout:
    what a stuck DNS lookup or a trickling answer looks like from the pool."""

    name = "Blocking"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.lock = threading.Lock()

    def query_scalar(self, query: str) -> float | None:
        with self.lock:
            self.calls += 1
        self.release.wait(60)
        return 1.0


def run(test: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(test(), timeout=60)

    return asyncio.run(bounded())


async def timed(work: Awaitable[T]) -> tuple[T, float]:
    start = time.monotonic()
    result = await work
    return result, time.monotonic() - start


def test_a_round_against_a_silent_server_ends_within_its_deadline(silent: str) -> None:
    # 16 gates are 32 queries for 4 workers: waiting in turn for the 1 s timeout would
    # take 8 s and more; the round's deadline (2 x 1 s + 1 s) ends it first.
    provider = client_for_settings(PrometheusSettings(address=silent, timeout_s=1))
    assert provider.round_deadline_s == 3.0

    r, took = run(lambda: timed(evaluate_round(gates(16), CTX, provider, NOW)))
    assert took < 10
    assert r.error is not None and "Prometheus at http://127.0.0.1" in r.error
    assert all(v.verdict == "Error" for v in r.results)
    assert "deadline" in r.error or "did not answer" in r.error
    # Queries that had not started were dropped, not left queued.
    assert provider.pool.waiting == 0


def test_a_hanging_provider_delays_only_its_own_rounds(silent: str, healthy: str) -> None:
    hanging = client_for_settings(PrometheusSettings(address=silent, timeout_s=30))
    fine = client_for_settings(PrometheusSettings(address=healthy, timeout_s=30))
    assert hanging.pool is not fine.pool

    async def body() -> tuple[GateRound, float, bool]:
        stuck = asyncio.create_task(evaluate_round(gates(16), CTX, hanging, NOW))
        # Every worker of the hanging address is now waiting for an answer (for up to 30 s,
        # and the round for up to 60 s).
        await until(lambda: hanging.pool.running == hanging.pool.workers)
        try:
            r, took = await timed(evaluate_round(gates(16), CTX, fine, NOW))
            return r, took, stuck.done()
        finally:
            stuck.cancel()

    r, took, stuck_done = run(body)
    assert not stuck_done
    assert took < 10
    assert r.error is None and [v.verdict for v in r.results] == ["Pass"] * 16


def test_a_saturated_pool_fails_fast() -> None:
    blocking = Blocking()
    pooled = PooledClient(blocking, QueryPool("Blocking at test", workers=2), timeout_s=0.5)
    try:

        async def body() -> tuple[GateRound, GateRound, float]:
            first = await evaluate_round(gates(2), CTX, pooled, NOW)
            # Both workers are held by queries the first round gave up on.
            assert pooled.pool.abandoned == 2 and pooled.pool.saturated
            calls = blocking.calls
            second, took = await timed(evaluate_round(gates(2), CTX, pooled, NOW))
            assert blocking.calls == calls  # nothing new was even queued
            return first, second, took

        first, second, took = run(body)
        assert first.error is not None
        assert second.error is not None and "still held by earlier queries" in second.error
        assert took < 1.0  # no deadline waited out (the first round took 2 s)
        assert all(v.verdict == "Error" for v in second.results)

        # Once the stuck queries return, the pool takes work again.
        blocking.release.set()
        deadline = time.monotonic() + 10
        while pooled.pool.abandoned and time.monotonic() < deadline:
            time.sleep(0.01)
        third = run(lambda: evaluate_round(gates(1), CTX, pooled, NOW))
        assert third.error is None and third.results[0].verdict == "Pass"
    finally:
        blocking.release.set()
        pooled.pool.shutdown()


def test_query_deadline_counts_from_the_start_of_the_query() -> None:
    pool = QueryPool("Slow at test", workers=1)

    def slow(q: str) -> str:
        time.sleep(0.3)
        return q

    async def body() -> list[str]:
        # Five 0.3 s calls on one worker: the last waits 1.2 s for it, yet none of them
        # runs past its own 1 s deadline.
        return list(await asyncio.gather(*(pool.run(slow, q, deadline_s=1) for q in "abcde")))

    try:
        assert run(body) == list("abcde")
    finally:
        pool.shutdown()


def test_timeouts_and_refusals() -> None:
    pool = QueryPool("Busy at test", workers=1, max_backlog=1)
    release = threading.Event()

    def hold(q: str) -> str:
        release.wait(30)
        return q

    async def body() -> None:
        with pytest.raises(QueryTimedOut, match=r"Busy at test did not answer within 0.2s"):
            await pool.run(hold, "a", deadline_s=0.2)
        assert pool.abandoned == 1 and pool.saturated
        with pytest.raises(PoolSaturated, match="not queueing more"):
            await pool.run(hold, "b", deadline_s=0.2)

    try:
        run(body)
        release.set()
        while pool.abandoned:
            time.sleep(0.01)
        release.clear()

        async def backlog() -> None:
            running = asyncio.create_task(pool.run(hold, "c", deadline_s=30))
            await until(lambda: pool.running == 1)
            waiting = asyncio.create_task(pool.run(hold, "d", deadline_s=30))
            await until(lambda: pool.waiting == 1)
            with pytest.raises(PoolSaturated, match="already wait"):
                await pool.run(hold, "e", deadline_s=30)
            waiting.cancel()  # a call not yet started is dropped from the pool
            await asyncio.wait([waiting])
            assert pool.waiting == 0
            release.set()
            assert await running == "c"

        run(backlog)
    finally:
        release.set()
        pool.shutdown()


def test_shutdown_refuses_without_waiting() -> None:
    pool = QueryPool("Closed at test", workers=1)
    release = threading.Event()

    async def body() -> None:
        running = asyncio.create_task(pool.run(lambda q: release.wait(30), "a", deadline_s=30))
        await until(lambda: pool.running == 1)
        queued = asyncio.create_task(pool.run(lambda q: q, "b", deadline_s=30))
        await until(lambda: pool.waiting == 1)
        pool.shutdown()  # returns at once, though a call is still running
        assert not running.done()
        with pytest.raises(PoolSaturated, match="shut down"):
            await queued
        with pytest.raises(PoolSaturated, match="shut down"):
            await pool.run(lambda q: q, "c", deadline_s=1)
        release.set()
        assert await running is True

    try:
        run(body)
    finally:
        release.set()


def test_rounds_use_named_pool_threads_never_the_default_executor(healthy: str) -> None:
    provider = client_for_settings(PrometheusSettings(address=healthy, timeout_s=5))
    names: list[str] = []
    real = provider.client.query_scalar

    def recording(q: str) -> float | None:
        names.append(threading.current_thread().name)
        return real(q)

    object.__setattr__(provider.client, "query_scalar", recording)
    default = NoDefaultExecutor()

    async def body() -> GateRound:
        asyncio.get_running_loop().set_default_executor(default)
        return await evaluate_round(gates(3), CTX, provider, NOW)

    try:
        r = run(body)
    finally:
        default.shutdown()
    assert r.error is None and [v.verdict for v in r.results] == ["Pass"] * 3
    assert default.used == []
    host = healthy.removeprefix("http://")
    assert names and all(n.startswith(f"segue-query-{host}") for n in names)
