"""The notification dispatcher: one bounded queue and one background worker per receiver.

``publish`` only enqueues, so a slow, failing or hanging receiver never delays a
reconcile; and since every receiver has its own lane, it never delays the other receivers
either, while each one still gets its messages in order. When a lane is full its oldest
delivery is dropped (and counted): the newest state of a Rollout is worth more than an old
one. Everything runs on the operator's event loop; ``publish`` must be called from it.
Deliveries share one HTTP session (``webhook.open_session``): async I/O on the loop, DNS on
two threads of its own, no proxy from the environment, a timeout on every request.

A destination the operator's rules refuse (``destinations``) gets nothing; the refusal is
counted as a failure, logged once per Rollout, target and reason, and handed to
``on_refused`` every time (the controller posts one Event on the Rollout for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Protocol

import aiohttp
from yarl import URL

from segue.notify.destinations import Destinations, Refusal
from segue.notify.payloads import payload
from segue.notify.types import Notification, WebhookTarget
from segue.notify.webhook import (
    DEFAULT_POLICY,
    DeliveryResult,
    PoolResolver,
    RetryPolicy,
    open_session,
    post,
)

log = logging.getLogger("segue.notify")

DEFAULT_QUEUE_SIZE: Final = 1000
# Drops come in bursts when a receiver hangs; one warning per this many is enough.
_DROP_LOG_EVERY: Final = 100
# Refusals logged (namespace, Rollout, target, reason), remembered up to this many; past
# it, no more lines.
_MAX_REFUSALS_LOGGED: Final = 10_000

# Told about a notification that was not sent because its target is refused.
RefusalListener = Callable[[Notification, WebhookTarget, Refusal], None]


class DeliveryObserver(Protocol):
    """Told about losses, e.g. the operator's metrics (``OperatorMetrics`` fits)."""

    def notification_dropped(self) -> None: ...

    def notification_failed(self) -> None: ...


@dataclass(frozen=True)
class _Job:
    target: WebhookTarget
    notification: Notification


@dataclass
class _Lane:
    queue: asyncio.Queue[_Job]
    worker: asyncio.Task[None] | None = None


@dataclass
class DispatcherStats:
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    refused: int = 0


class Dispatcher:
    """Delivers notifications to webhooks in the background.

    ``async with Dispatcher() as d: d.publish(targets, n)``, or ``await d.start()`` and
    ``await d.stop()`` around the operator's run.
    """

    def __init__(
        self,
        *,
        max_queue: int = DEFAULT_QUEUE_SIZE,
        policy: RetryPolicy = DEFAULT_POLICY,
        observer: DeliveryObserver | None = None,
        destinations: Destinations | None = None,
        proxy: str | None = None,
        on_refused: RefusalListener | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.policy = policy
        self.observer = observer
        self.destinations = destinations if destinations is not None else Destinations()
        self.proxy = proxy or None
        self.on_refused = on_refused
        self._refusals_logged: set[tuple[str, str, str, str]] = set()
        self.stats = DispatcherStats()
        self._max_queue = max_queue
        self._lanes: dict[WebhookTarget, _Lane] = {}
        self._session: aiohttp.ClientSession | None = None
        self._resolver: PoolResolver | None = None
        self._started = False
        self._closed = False

    @property
    def pending(self) -> int:
        """Deliveries waiting in the queues (not counting those in flight)."""
        return sum(lane.queue.qsize() for lane in self._lanes.values())

    def _lane(self, target: WebhookTarget) -> _Lane:
        lane = self._lanes.get(target)
        if lane is None:
            lane = self._lanes[target] = _Lane(asyncio.Queue(maxsize=self._max_queue))
        if self._started and lane.worker is None:
            lane.worker = asyncio.create_task(self._run(lane.queue), name="segue-notify")
        return lane

    def publish(self, targets: Iterable[WebhookTarget], notification: Notification) -> int:
        """Queue ``notification`` for every target that wants its kind; never blocks and
        never raises for a full queue. Returns how many deliveries were queued."""
        jobs = [_Job(t, notification) for t in targets if t.wants(notification.kind)]
        if self._closed:
            self._drop(len(jobs), "the dispatcher is stopped")
            return 0
        for job in jobs:
            queue = self._lane(job.target).queue
            while True:
                try:
                    queue.put_nowait(job)
                    break
                except asyncio.QueueFull:
                    queue.get_nowait()
                    queue.task_done()
                    self._drop(1, "the queue is full")
        return len(jobs)

    async def start(self) -> None:
        if self._started:
            return
        if self._closed:
            raise RuntimeError("a stopped dispatcher cannot start again")
        # The proxy is the operator's own choice: its name is looked up unjudged.
        exempt = frozenset({URL(self.proxy).raw_host or ""}) if self.proxy else frozenset()
        self._resolver = PoolResolver(destinations=self.destinations, exempt=exempt)
        self._session = open_session(self._resolver, self.proxy)
        self._started = True
        for target in self._lanes:  # published before start
            self._lane(target)

    async def stop(self, deadline: float = 10.0) -> None:
        """Stop taking notifications, deliver what is queued for up to ``deadline``
        seconds, then drop the rest."""
        self._closed = True
        lanes = list(self._lanes.values())
        workers = [lane.worker for lane in lanes if lane.worker is not None]
        if workers:
            joined = asyncio.gather(*(lane.queue.join() for lane in lanes))
            try:
                async with asyncio.timeout(deadline):
                    await joined
            except TimeoutError:
                log.warning("notifications: %d left undelivered at shutdown", self.pending)
            for worker in workers:
                worker.cancel()
            for worker in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        left = 0
        for lane in lanes:
            lane.worker = None
            while not lane.queue.empty():
                lane.queue.get_nowait()
                lane.queue.task_done()
                left += 1
        self._drop(left, "the dispatcher stopped")
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            job = await queue.get()
            try:
                await self._deliver(job)
            except asyncio.CancelledError:
                self._drop(1, "the dispatcher stopped")
                raise
            except Exception:
                # A bug in one delivery must not end the worker and silence the rest.
                log.exception("notifications: delivery to %s crashed", job.target.redacted)
                self._failed()
            finally:
                queue.task_done()

    async def _deliver(self, job: _Job) -> None:
        assert self._session is not None
        n = job.notification
        body = payload(job.target.format, n)
        result = await post(self._session, job.target, body, self.policy, self.destinations)
        if result.refusal is not None:
            self._refused(job, result.refusal)
            return
        if result.ok:
            self.stats.delivered += 1
            log.debug(
                "notifications: %s for %s/%s sent to %s",
                n.kind,
                n.namespace,
                n.rollout,
                job.target.redacted,
            )
            return
        log.warning(
            "notifications: %s for %s/%s not delivered to %s: %s",
            n.kind,
            n.namespace,
            n.rollout,
            job.target.redacted,
            _describe(result),
        )
        self._failed()

    def _refused(self, job: _Job, refusal: Refusal) -> None:
        self.stats.refused += 1
        self._failed()
        n = job.notification
        key = (n.namespace, n.rollout, job.target.redacted, refusal.reason)
        if key not in self._refusals_logged and len(self._refusals_logged) < _MAX_REFUSALS_LOGGED:
            self._refusals_logged.add(key)
            log.warning(
                "notifications: %s/%s: not sending to %s: %s",
                n.namespace,
                n.rollout,
                job.target.redacted,
                refusal,
            )
        if self.on_refused is not None:
            try:
                self.on_refused(n, job.target, refusal)
            except Exception:  # reporting is best effort; the refusal is counted already
                log.exception("notifications: reporting a refusal failed")

    def _failed(self) -> None:
        self.stats.failed += 1
        if self.observer is not None:
            self.observer.notification_failed()

    def _drop(self, count: int, why: str) -> None:
        for _ in range(count):
            self.stats.dropped += 1
            if self.observer is not None:
                self.observer.notification_dropped()
            if self.stats.dropped % _DROP_LOG_EVERY == 1:
                log.warning("notifications: dropped one (%s); %d so far", why, self.stats.dropped)


def _describe(result: DeliveryResult) -> str:
    what = f"HTTP {result.status}" if result.status is not None else "no answer"
    detail = f" ({result.error})" if result.error else ""
    tries = "attempt" if result.attempts == 1 else "attempts"
    return f"{result.outcome} after {result.attempts} {tries}: {what}{detail}"
