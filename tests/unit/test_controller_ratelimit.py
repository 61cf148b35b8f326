"""The client-side rate limit: a token bucket per Kubernetes lane, and 429s."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from segue.controller import kube as kube_module
from segue.controller.kube import ApiThrottled, Kube
from segue.controller.main import parse_args
from segue.controller.ratelimit import TokenBucket, retry_after
from segue.controller.slots import Slots
from tests.unit.waiting import until


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_at_once_then_requests_wait_in_order() -> None:
    clock = Clock()
    bucket = TokenBucket(qps=10, burst=3, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    waits = [bucket.reserve() for _ in range(3)]
    assert waits == pytest.approx([0.1, 0.2, 0.3])


def test_tokens_come_back_at_the_rate_up_to_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(qps=10, burst=2, clock=clock)
    bucket.reserve(), bucket.reserve()
    clock.now += 0.1
    assert bucket.reserve() == pytest.approx(0.0, abs=1e-9)
    assert bucket.reserve() == pytest.approx(0.1)
    clock.now += 60
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1], abs=1e-9)


def test_hold_after_a_429_delays_everything_by_the_retry_after() -> None:
    clock = Clock()
    bucket = TokenBucket(qps=10, burst=5, clock=clock)
    bucket.hold(2.0)
    assert bucket.reserve() == pytest.approx(2.1)


def test_retry_after_is_bounded() -> None:
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert retry_after({"Retry-After": "3600"}) == 30.0
    assert retry_after({"Retry-After": "soon"}) == 1.0
    assert retry_after(None) == 1.0


@pytest.mark.parametrize(("qps", "burst"), [(0, 1), (-1, 1), (1e9, 1), (1, 0)])
def test_bad_limits_are_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match=r"qps|burst"):
        TokenBucket(qps, burst)


def test_flags_and_their_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--kube-qps", "50", "--kube-burst", "80"])
    assert (args.kube_qps, args.kube_burst) == (50.0, 80)
    default = parse_args([])
    assert (default.kube_qps, default.kube_burst) == (200.0, 400)
    with pytest.raises(SystemExit):
        parse_args(["--kube-qps", "0"])
    assert "--kube-qps must be above 0" in capsys.readouterr().err


def test_event_flags_and_their_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--kube-event-qps", "5", "--kube-event-burst", "10"])
    assert (args.kube_event_qps, args.kube_event_burst) == (5.0, 10)
    default = parse_args([])
    assert (default.kube_event_qps, default.kube_event_burst) == (20.0, 50)
    with pytest.raises(SystemExit):
        parse_args(["--kube-event-burst", "0"])
    assert "--kube-event-burst must be 1 to" in capsys.readouterr().err


def test_env_qps_must_be_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGUE_KUBE_QPS", "fast")
    with pytest.raises(SystemExit, match="SEGUE_KUBE_QPS"):
        parse_args([])


def test_a_429_holds_the_lane_and_says_when_to_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_module.Lane, "create", _fake_lane)
    kube = Kube(object(), qps=100, burst=10)  # type: ignore[arg-type]

    def throttled(api: Any) -> None:
        error = ApiException(status=429, reason="Too Many Requests")
        error.headers = {"Retry-After": "4"}
        raise error

    async def go() -> None:
        with pytest.raises(ApiThrottled) as raised:
            await kube.call(throttled)
        assert raised.value.retry_after_s == 4.0
        assert kube.normal.limit.reserve() > 3.9  # the next request waits it out
        assert kube.urgent.limit.reserve() == 0.0  # the urgent lane has a budget of its own

    try:
        asyncio.run(go())
    finally:
        kube.close()


def _fake_lane(
    name: str, configuration: Any, workers: int, qps: float, burst: int
) -> kube_module.Lane:
    from concurrent.futures import ThreadPoolExecutor

    return kube_module.Lane(
        name,
        object(),  # type: ignore[arg-type]
        ThreadPoolExecutor(workers),
        TokenBucket(qps, burst),
        Slots(workers),
    )


def test_waiting_for_a_thread_is_not_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request queued behind others gets its deadline from when it is sent: requests
    piling up on a busy lane are not taken for an API server that does not answer."""
    monkeypatch.setattr(kube_module.Lane, "create", _fake_lane)
    monkeypatch.setattr(kube_module, "NORMAL_WORKERS", 1)
    kube = Kube(object(), deadline_s=2.0)  # type: ignore[arg-type]

    def slow(api: Any) -> str:
        threading.Event().wait(1.2)  # each well within the deadline, both together not
        return "ok"

    async def go() -> None:
        results = await asyncio.gather(kube.call(slow), kube.call(slow))
        assert list(results) == ["ok", "ok"]
        assert not kube.connectivity.down

    try:
        asyncio.run(go())
    finally:
        kube.close()


def test_ordinary_requests_wait_while_urgent_ones_are_under_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kube_module.Lane, "create", _fake_lane)
    kube = Kube(object())  # type: ignore[arg-type]
    release = threading.Event()
    order: list[str] = []

    def abort(api: Any) -> None:
        release.wait(10)
        order.append("urgent")

    def progress(api: Any) -> None:
        order.append("normal")

    async def go() -> None:
        with kube_module.urgent():
            first = asyncio.create_task(kube.call(abort))
        await asyncio.sleep(0)  # the urgent request is under way
        second = asyncio.create_task(kube.call(progress))
        for _ in range(20):
            await asyncio.sleep(0)
        assert order == []  # the ordinary request has not been sent
        release.set()
        await asyncio.gather(first, second)
        assert order == ["urgent", "normal"]

    try:
        asyncio.run(go())
    finally:
        kube.close()


@pytest.mark.parametrize("urgent", [True, False])
def test_on_the_urgent_lane_a_traffic_write_goes_before_others_that_wait(
    monkeypatch: pytest.MonkeyPatch, urgent: bool
) -> None:
    """One thread, busy: a status write and then a route write wait for it. On the urgent
    lane the route write goes first; the normal lane keeps arrival order."""
    monkeypatch.setattr(kube_module.Lane, "create", _fake_lane)
    monkeypatch.setattr(kube_module, "URGENT_WORKERS", 1)
    monkeypatch.setattr(kube_module, "NORMAL_WORKERS", 1)
    kube = Kube(object())  # type: ignore[arg-type]
    lane = kube.urgent if urgent else kube.normal
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def write(what: str) -> Any:
        def call(api: Any) -> None:
            if what == "busy":
                started.set()
                release.wait(10)
            order.append(what)

        return call

    async def go() -> None:
        with kube_module.urgent(urgent):
            busy = asyncio.create_task(kube.call(write("busy")))
            await until(started.is_set)  # on the lane's only thread
            status = asyncio.create_task(kube.call(write("status")))
            await until(lambda: lane.slots.waiting == 1)
            with kube_module.moving_traffic():
                route = asyncio.create_task(kube.call(write("route")))
            await until(lambda: lane.slots.waiting == 2)
        release.set()
        await asyncio.gather(busy, status, route)

    try:
        asyncio.run(go())
    finally:
        kube.close()
    expected = ["busy", "route", "status"] if urgent else ["busy", "status", "route"]
    assert order == expected
