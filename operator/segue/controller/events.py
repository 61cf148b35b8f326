"""The operator's Kubernetes Events, posted from a bounded queue on a lane of their own.

An Event tells a person what happened (``kubectl describe rollout``); it never decides
anything. So Events never hold up a weight move or an abort: ``post`` only queues one (with
the time it happened, so a late post still shows the right time), and a few posting tasks
send them on the Kubernetes client's *events* lane, which has a rate limit of its own
(``--kube-event-qps``) and, like the normal lane, sends nothing while urgent requests are
under way.

When more Events wait than the queue holds (a thousand Rollouts stepping at once on a slow
API server), Normal ones are dropped first and counted (``segue_events_dropped_total``), as
client-go's event spam filter does; a Warning displaces the oldest Normal one. The Rollout's
status and history keep every step whatever happens to its Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from segue.api.text import MAX_MESSAGE_BYTES, cap
from segue.controller.kube import ApiThrottled, ApiUnavailable, Kube

log = logging.getLogger(__name__)

Json = dict[str, Any]

COMPONENT: Final = "segue"
# Events waiting to be posted, at most.
MAX_QUEUED: Final = 1000
# Posts in flight at once (each waits for the events lane's rate limit and a thread).
POSTERS: Final = 4
# After the API server was unreachable or throttled the post: wait this long, then retry.
RETRY_S: Final = 1.0
MAX_REASON: Final = 128
MAX_INSTANCE: Final = 128
# Of an object's name in an Event's name (<object>.<hex nanoseconds>, as client-go names
# them: the API server lists an object's Events in the order they happened).
MAX_NAME_PREFIX: Final = 200
# Cluster-scoped objects (MetricProviders) have their Events here.
CLUSTER_EVENTS_NAMESPACE: Final = "default"


@dataclass(frozen=True)
class PendingEvent:
    namespace: str
    body: Json

    @property
    def warning(self) -> bool:
        return bool(self.body.get("type") == "Warning")


def _now() -> datetime:
    return datetime.now(UTC)


def _ns(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


def event_body(
    obj: Json,
    type_: str,
    reason: str,
    message: str,
    at: datetime,
    instance: str = "",
    stamp_ns: int | None = None,
) -> tuple[str, Json]:
    """The namespace and the core/v1 Event about ``obj`` (any object with apiVersion, kind
    and metadata), happening ``at``."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    namespace = str(meta.get("namespace") or CLUSTER_EVENTS_NAMESPACE)
    involved: Json = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "name": name,
        "uid": meta.get("uid"),
    }
    if meta.get("namespace"):
        involved["namespace"] = namespace
    if meta.get("resourceVersion"):
        involved["resourceVersion"] = meta["resourceVersion"]
    stamp = at.isoformat().replace("+00:00", "Z")
    body: Json = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{name[:MAX_NAME_PREFIX]}.{_ns(at) if stamp_ns is None else stamp_ns:x}",
            "namespace": namespace,
        },
        "involvedObject": involved,
        "type": type_,
        "reason": reason[:MAX_REASON],
        "action": reason[:MAX_REASON],
        "message": cap(message, MAX_MESSAGE_BYTES),
        "source": {"component": COMPONENT},  # the From column of kubectl describe
        "reportingComponent": COMPONENT,
        "reportingInstance": instance[:MAX_INSTANCE],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    return namespace, body


class EventPoster:
    """Queues Events and posts them on the events lane. ``post`` never blocks and never
    raises; ``run`` is the posting loop (a task for the operator's lifetime)."""

    def __init__(
        self,
        kube: Kube,
        max_queued: int = MAX_QUEUED,
        posters: int = POSTERS,
        clock: Callable[[], datetime] = _now,
        on_dropped: Callable[[str], None] | None = None,
    ) -> None:
        self._kube = kube
        self._max = max_queued
        self._posters = posters
        self._clock = clock
        self._on_dropped = on_dropped
        self._queue: deque[PendingEvent] = deque()
        self._nonempty = asyncio.Event()
        # Set while nothing waits and nothing is being posted.
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.instance = ""
        self.posted = 0
        self._last_ns = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    def post(self, obj: Json, type_: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj``; when the queue is full, drop a Normal one."""
        at = self._clock()
        # Strictly increasing, so two Events of one pass keep their order (and names apart)
        # however close together, and whichever of the posters sends its one first.
        self._last_ns = max(self._last_ns + 1, _ns(at))
        namespace, body = event_body(
            obj, type_, reason, message, at, self.instance, stamp_ns=self._last_ns
        )
        event = PendingEvent(namespace, body)
        if len(self._queue) >= self._max and not self._make_room(event):
            self._drop(event)
            return
        self._queue.append(event)
        self._idle.clear()
        self._nonempty.set()

    def _make_room(self, incoming: PendingEvent) -> bool:
        """Room for a Warning: the oldest Normal Event waiting goes."""
        if not incoming.warning:
            return False
        for i, waiting in enumerate(self._queue):
            if not waiting.warning:
                del self._queue[i]
                self._drop(waiting)
                return True
        return False

    def _drop(self, event: PendingEvent) -> None:
        self.dropped += 1
        type_ = str(event.body.get("type"))
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning(
                "Events are arriving faster than the API server takes them; %d dropped so "
                "far (Normal first; segue_events_dropped_total)",
                self.dropped,
            )
        if self._on_dropped is not None:
            self._on_dropped(type_)

    async def _next(self) -> PendingEvent:
        while not self._queue:
            self._nonempty.clear()
            await self._nonempty.wait()
        return self._queue.popleft()

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"event-poster-{i}")
                for i in range(self._posters)
            ]

    async def stop(self, deadline_s: float = 2.0) -> None:
        """Post what waits for at most ``deadline_s``, then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline_s):
                await self._idle.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _run(self) -> None:
        while True:
            event = await self._next()
            self._in_flight += 1
            try:
                await self._send(event)
            except (ApiUnavailable, ApiThrottled):
                # Back at the front: it is the oldest, and the lane waits out the server.
                self._queue.appendleft(event)
                self._nonempty.set()
                await asyncio.sleep(RETRY_S)
            except asyncio.CancelledError:
                raise
            except ApiException as e:
                log.warning(
                    "Event %s about %s not posted: HTTP %s %s",
                    event.body.get("reason"),
                    event.body["involvedObject"].get("name"),
                    e.status,
                    e.reason,
                )
            except Exception:
                log.exception("Event %s not posted", event.body.get("reason"))
            else:
                self.posted += 1
            finally:
                self._in_flight -= 1
                if not self._queue and not self._in_flight:
                    self._idle.set()

    async def _send(self, event: PendingEvent) -> None:
        await self._kube.call_events(functools.partial(_create, event=event))


def _create(api: client.ApiClient, event: PendingEvent) -> None:
    """POST the Event as it is: the generated method would first validate it into a model
    and then turn the answer into one nobody reads."""
    request = api.param_serialize(
        "POST",
        "/api/v1/namespaces/{namespace}/events",
        path_params={"namespace": event.namespace},
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body=event.body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request)
    response.read()  # type: ignore[no-untyped-call]
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
