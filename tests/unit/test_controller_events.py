"""The Event poster: a bounded queue, Normal Events dropped first, retries through outages,
and the time an Event happened kept however late it is posted."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from segue.controller.events import MAX_QUEUED, EventPoster, PendingEvent, event_body
from segue.controller.kube import ApiUnavailable

Json = dict[str, Any]

ROLLOUT: Json = {
    "apiVersion": "segue.dev/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "shop", "namespace": "team", "uid": "u-1", "resourceVersion": "7"},
}
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class FakeKube:
    """Stands in for ``Kube.call_events``: records each Event, or fails as told."""

    def __init__(self) -> None:
        self.sent: list[PendingEvent] = []
        self.failures: list[BaseException] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def call_events(self, fn: Callable[[Any], Any]) -> None:
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        assert isinstance(fn, functools.partial)
        self.sent.append(fn.keywords["event"])


def poster(kube: FakeKube, **kwargs: Any) -> tuple[EventPoster, list[str]]:
    dropped: list[str] = []
    p = EventPoster(kube, clock=lambda: T0, on_dropped=dropped.append, **kwargs)  # type: ignore[arg-type]
    return p, dropped


def sync(case: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(case)
    def run() -> None:
        asyncio.run(case())

    return run


async def settle(p: EventPoster) -> None:
    await asyncio.wait_for(p._idle.wait(), 2.0)


def test_the_event_names_the_object_and_keeps_the_time_it_happened() -> None:
    namespace, body = event_body(ROLLOUT, "Normal", "WeightSet", "weight 25%", T0, "pod-a (0/1)")
    assert namespace == "team"
    assert body["involvedObject"] == {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "name": "shop",
        "uid": "u-1",
        "namespace": "team",
        "resourceVersion": "7",
    }
    assert (body["type"], body["reason"], body["message"]) == ("Normal", "WeightSet", "weight 25%")
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-11-30T12:00:00Z"
    assert body["source"] == {"component": "segue"}
    assert body["reportingComponent"] == "segue"
    assert body["reportingInstance"] == "pod-a (0/1)"
    assert body["metadata"]["name"].startswith("shop.")


def test_an_object_s_events_are_named_in_the_order_they_happened() -> None:
    # The API server lists Events by name: within a second (the timestamps' precision),
    # that is the order kubectl shows them in.
    p = EventPoster(FakeKube(), clock=lambda: T0)  # type: ignore[arg-type]
    for reason in ("Aborted", "RollingBack", "RolledBack"):
        p.post(ROLLOUT, "Normal", reason, "")
    names = [e.body["metadata"]["name"] for e in p._queue]
    assert len(set(names)) == 3
    assert sorted(names) == names
    assert all(n.startswith("shop.") for n in names)


def test_a_cluster_scoped_object_has_its_events_in_default() -> None:
    provider = {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "MetricProvider",
        "metadata": {"name": "p"},
    }
    namespace, body = event_body(provider, "Warning", "Refused", "x", T0)
    assert namespace == "default"
    assert "namespace" not in body["involvedObject"]


def test_long_reasons_and_messages_are_cut_to_what_the_api_server_takes() -> None:
    _, body = event_body(ROLLOUT, "Warning", "R" * 300, "m" * 5000, T0)
    assert len(body["reason"]) == 128
    assert len(body["message"].encode()) <= 1024


@sync
async def test_events_are_posted_in_order_with_the_time_they_happened() -> None:
    kube = FakeKube()
    clock = iter(T0 + timedelta(seconds=i) for i in range(10))
    p = EventPoster(kube, clock=lambda: next(clock), posters=1)  # type: ignore[arg-type]
    for reason in ("Progressing", "WeightSet", "Succeeded"):
        p.post(ROLLOUT, "Normal", reason, reason)
    kube.gate.clear()
    p.start()
    for _ in range(10):  # the posters run until they wait on the lane
        await asyncio.sleep(0)
    assert kube.sent == []  # still waiting on the lane: posting is not the caller's wait
    kube.gate.set()
    await settle(p)
    assert [e.body["reason"] for e in kube.sent] == ["Progressing", "WeightSet", "Succeeded"]
    assert [e.body["firstTimestamp"] for e in kube.sent] == [
        "2026-11-30T12:00:00Z",
        "2026-11-30T12:00:01Z",
        "2026-11-30T12:00:02Z",
    ]
    assert p.posted == 3
    await p.stop()


@sync
async def test_a_full_queue_drops_normal_events_first_and_counts_them() -> None:
    kube = FakeKube()
    p, dropped = poster(kube, max_queued=3)
    p.post(ROLLOUT, "Normal", "A", "")
    p.post(ROLLOUT, "Warning", "W1", "")
    p.post(ROLLOUT, "Normal", "B", "")
    p.post(ROLLOUT, "Normal", "C", "")  # full: this Normal one is dropped
    p.post(ROLLOUT, "Warning", "W2", "")  # full: the oldest Normal one (A) makes room
    assert len(p) == 3
    assert dropped == ["Normal", "Normal"]
    p.post(ROLLOUT, "Warning", "W3", "")  # B goes
    p.post(ROLLOUT, "Warning", "W4", "")  # only Warnings wait: this one is dropped
    assert dropped == ["Normal", "Normal", "Normal", "Warning"]
    p.start()
    await settle(p)
    assert [e.body["reason"] for e in kube.sent] == ["W1", "W2", "W3"]
    assert p.dropped == 4
    await p.stop()


@sync
async def test_an_unreachable_api_server_delays_an_event_without_losing_it() -> None:
    kube = FakeKube()
    kube.failures = [ApiUnavailable("connection refused"), ApiUnavailable("connection refused")]
    p, dropped = poster(kube, posters=1)
    p.post(ROLLOUT, "Normal", "WeightSet", "")
    p.post(ROLLOUT, "Normal", "Succeeded", "")
    p.start()
    await settle(p)
    assert [e.body["reason"] for e in kube.sent] == ["WeightSet", "Succeeded"]
    assert dropped == []
    await p.stop()


@sync
async def test_a_refused_event_is_dropped_and_the_next_one_posted() -> None:
    kube = FakeKube()
    kube.failures = [ApiException(status=403, reason="Forbidden")]
    p, _ = poster(kube, posters=1)
    p.post(ROLLOUT, "Normal", "WeightSet", "")
    p.post(ROLLOUT, "Normal", "Succeeded", "")
    p.start()
    await settle(p)
    assert [e.body["reason"] for e in kube.sent] == ["Succeeded"]
    await p.stop()


@sync
async def test_posting_never_waits_for_the_api_server() -> None:
    kube = FakeKube()
    kube.gate.clear()  # the API server takes nothing
    p, dropped = poster(kube)
    p.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(MAX_QUEUED + 500):
        p.post(ROLLOUT, "Normal", "WeightSet", str(i))
    assert loop.time() - started < 1.0
    assert dropped == ["Normal"] * 500
    kube.gate.set()
    await settle(p)
    await p.stop()


@pytest.fixture(autouse=True)
def _fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("segue.controller.events.RETRY_S", 0.01)
