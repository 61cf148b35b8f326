"""The notification dispatcher: a bounded queue and one background worker.

``publish`` only enqueues, so a slow, failing or hanging receiver never delays a
reconcile. When the queue is full the oldest delivery is dropped (and counted): the newest
state of a Rollout is worth more than an old one. Everything runs on the operator's event
loop; ``publish`` must be called from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Protocol

import aiohttp

from segue.notify.payloads import payload
from segue.notify.types import Notification, WebhookTarget
from segue.notify.webhook import DEFAULT_POLICY, DeliveryResult, RetryPolicy, post

log = logging.getLogger("segue.notify")

DEFAULT_QUEUE_SIZE: Final = 1000
# Drops come in bursts when a receiver hangs; one warning per this many is enough.
_DROP_LOG_EVERY: Final = 100


class DeliveryObserver(Protocol):
    """Told about losses, e.g. the operator's metrics (``OperatorMetrics`` fits)."""

    def notification_dropped(self) -> None: ...

    def notification_failed(self) -> None: ...


@dataclass(frozen=True)
class _Job:
    target: WebhookTarget
    notification: Notification


@dataclass
class DispatcherStats:
    delivered: int = 0
    failed: int = 0
    dropped: int = 0


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
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.policy = policy
        self.observer = observer
        self.stats = DispatcherStats()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._worker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Deliveries waiting in the queue (not counting one in flight)."""
        return self._queue.qsize()

    def publish(self, targets: Iterable[WebhookTarget], notification: Notification) -> int:
        """Queue ``notification`` for every target that wants its kind; never blocks and
        never raises for a full queue. Returns how many deliveries were queued."""
        jobs = [_Job(t, notification) for t in targets if t.wants(notification.kind)]
        if self._closed:
            self._drop(len(jobs), "the dispatcher is stopped")
            return 0
        for job in jobs:
            while True:
                try:
                    self._queue.put_nowait(job)
                    break
                except asyncio.QueueFull:
                    self._queue.get_nowait()
                    self._queue.task_done()
                    self._drop(1, "the queue is full")
        return len(jobs)

    async def start(self) -> None:
        if self._worker is not None:
            return
        if self._closed:
            raise RuntimeError("a stopped dispatcher cannot start again")
        # trust_env: clusters often reach chat services only through HTTPS_PROXY.
        self._session = aiohttp.ClientSession(trust_env=True)
        self._worker = asyncio.create_task(self._run(), name="segue-notify")

    async def stop(self, deadline: float = 10.0) -> None:
        """Stop taking notifications, deliver what is queued for up to ``deadline``
        seconds, then drop the rest."""
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout=deadline)
            except TimeoutError:
                log.warning("notifications: %d left undelivered at shutdown", self.pending)
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        left = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            left += 1
        self._drop(left, "the dispatcher stopped")
        if self._session is not None:
            await self._session.close()
            self._session = None

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

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
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
                self._queue.task_done()

    async def _deliver(self, job: _Job) -> None:
        assert self._session is not None
        n = job.notification
        result = await post(self._session, job.target, payload(job.target.format, n), self.policy)
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
