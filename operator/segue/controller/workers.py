"""One asyncio task per Rollout that has work, woken by watch events.

The supervisor is told about every watch event (Rollouts, and the Deployments and routes
they reference). A Rollout with work gets a worker; a finished one has none and costs
nothing. A worker sleeps until its Rollout or anything it references changes, until the
engine's next timed wake-up, or until its analysis round completes, so a change is acted
on within milliseconds and a Rollout that waits makes no request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from segue.analysis.providers.base import GateProblem, Provider
from segue.api.phases import TERMINAL
from segue.api.spec import RolloutSpec
from segue.controller.gates import RoundScheduler
from segue.controller.kube import ApiThrottled, ApiUnavailable
from segue.controller.store import newer
from segue.engine import ONE_SHOT
from segue.traffic.base import Ref

log = logging.getLogger(__name__)

Json = dict[str, Any]
Key = tuple[str, str]

FINALIZER: Final = "segue.dev/finalizer"
# Safety net while the API server is unreachable; its return wakes every worker at once.
OUTAGE_WAIT_S: Final = 30.0
# After an unexpected error: 1, 2, 4 ... seconds, at most this.
MAX_BACKOFF_S: Final = 30.0


def needs_work(body: Json) -> bool:
    """Whether a Rollout has anything for a worker to do."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return FINALIZER in (meta.get("finalizers") or [])
    status = body.get("status") or {}
    if status.get("phase") not in TERMINAL:
        return True
    if status.get("observedGeneration") != meta.get("generation"):
        return True
    annotations = meta.get("annotations") or {}
    return any(key in annotations for key in ONE_SHOT)


def slim(body: Json) -> Json:
    """The Rollout as a worker keeps it: without metadata.managedFields, which nothing
    reads and which is often the largest part of it."""
    meta = body.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return body
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def fingerprint(body: Json) -> tuple[Any, ...]:
    """What a person can change: the spec (generation), Segue's annotations, deletion."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    mine = tuple(sorted((k, v) for k, v in annotations.items() if k.startswith("segue.dev/")))
    return (meta.get("generation"), mine, meta.get("deletionTimestamp"))


@dataclass
class Worker:
    """What one Rollout's loop keeps in memory. Nothing here is durable state: a restart
    only makes the next analysis round run a little sooner."""

    key: Key
    obj: Json
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    rounds: RoundScheduler = field(default_factory=RoundScheduler)
    refs: frozenset[Ref] = frozenset()
    # resourceVersion the status write lost a race against (409), until a newer one is seen.
    conflict_rv: str | None = None
    failures: int = 0
    task: asyncio.Task[None] | None = None
    # The parsed spec and what its gates' planning found, for the generation (and
    # provider) they were made from: a pass at the same generation reuses them.
    parsed: tuple[int, RolloutSpec] | None = None
    planned: tuple[tuple[int, Provider], list[GateProblem]] | None = None

    def update(self, body: Json) -> bool:
        """Take a newer copy of the Rollout; True when a person changed something."""
        if not newer(body, self.obj):
            return False
        changed = fingerprint(body) != fingerprint(self.obj)
        self.obj = slim(body)
        return changed


Pass = Callable[[Worker], Awaitable[float | None]]


class Supervisor:
    def __init__(
        self,
        reconcile: Pass,
        on_refs: Callable[[Worker], None] | None = None,
        max_idle_s: float = 60.0,
        has_work: Callable[[Json], bool] = needs_work,
        kind: str = "Rollout",
    ) -> None:
        """``has_work`` and ``kind``: a sibling supervisor (Migrations) passes its own."""
        self._reconcile = reconcile
        self._has_work = has_work
        self._kind = kind
        self.workers: dict[Key, Worker] = {}
        self._watchers: dict[Ref, set[Key]] = {}
        self._max_idle_s = max_idle_s
        self.stopping = False

    # -- events -------------------------------------------------------------------------

    def rollout_event(self, type_: str | None, body: Json) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        worker = self.workers.get(key)
        if type_ == "DELETED":
            if worker is not None:
                self._stop(worker)
            return
        if worker is not None:
            if worker.update(body):
                worker.wake.set()
            return
        if self._has_work(body) and not self.stopping:
            self._start(key, body)

    def object_event(self, ref: Ref) -> None:
        """A watched Deployment or route changed: wake the Rollouts that reference it."""
        for key in self._watchers.get(ref, ()):
            worker = self.workers.get(key)
            if worker is not None:
                worker.wake.set()

    def wake_namespace(self, namespace: str) -> None:
        """Something in ``namespace`` changed that every worker there reads (a Migration
        reads all its namespace's Rollouts; a member reads its Migration)."""
        for (ns, _), worker in self.workers.items():
            if ns == namespace:
                worker.wake.set()

    def wake_all(self) -> None:
        for worker in self.workers.values():
            worker.wake.set()

    def watch(self, worker: Worker, refs: list[Ref]) -> None:
        """Remember which objects wake this worker."""
        wanted = frozenset(refs)
        if wanted == worker.refs:
            return
        for ref in worker.refs - wanted:
            self._unwatch(ref, worker.key)
        for ref in wanted - worker.refs:
            self._watchers.setdefault(ref, set()).add(worker.key)
        worker.refs = wanted

    # -- lifecycle ------------------------------------------------------------------------

    def _start(self, key: Key, body: Json) -> Worker:
        worker = Worker(key, slim(body))
        self.workers[key] = worker
        label = f"{self._kind.lower()} {key[0]}/{key[1]}"
        worker.task = asyncio.create_task(self._run(worker), name=label)
        return worker

    def _stop(self, worker: Worker) -> None:
        if worker.task is not None and worker.task is not asyncio.current_task():
            worker.task.cancel()
        self._forget(worker)

    def _forget(self, worker: Worker) -> None:
        worker.rounds.cancel()
        if self.workers.get(worker.key) is worker:
            del self.workers[worker.key]
        for ref in worker.refs:
            self._unwatch(ref, worker.key)
        worker.refs = frozenset()

    def _unwatch(self, ref: Ref, key: Key) -> None:
        keys = self._watchers.get(ref)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._watchers[ref]

    async def stop(self) -> None:
        self.stopping = True
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, worker: Worker) -> None:
        ns, name = worker.key
        try:
            loop = asyncio.get_running_loop()
            while True:
                worker.wake.clear()
                started = loop.time()
                wait = await self._one_pass(worker, ns, name)
                if wait is None and not self._has_work(worker.obj):
                    return  # finished: the next watch event with work starts a new worker
                # A deadline counts from when the pass looked, not from when it finished.
                wait = self._max_idle_s if wait is None else wait
                await _sleep(worker.wake, started + wait - loop.time())
        finally:
            self._forget(worker)

    async def _one_pass(self, worker: Worker, ns: str, name: str) -> float | None:
        try:
            wait = await self._reconcile(worker)
        except asyncio.CancelledError:
            raise
        except ApiUnavailable:
            return OUTAGE_WAIT_S  # logged once per outage; its end wakes every worker
        except ApiThrottled as e:
            log.debug("%s %s/%s: %s", self._kind, ns, name, e)
            return e.retry_after_s  # the lane holds its requests as long
        except Exception:
            worker.failures += 1
            backoff = min(MAX_BACKOFF_S, 2.0 ** (worker.failures - 1))
            if worker.failures == 1:
                log.exception("%s %s/%s: pass failed; retrying", self._kind, ns, name)
            else:
                log.debug("%s %s/%s: pass failed again (%d)", self._kind, ns, name, worker.failures)
            return backoff
        if worker.failures:
            log.info("%s %s/%s: passes succeed again", self._kind, ns, name)
            worker.failures = 0
        return wait


async def _sleep(wake: asyncio.Event, seconds: float) -> None:
    # asyncio.timeout, not wait_for: on Python 3.11, wait_for can swallow a cancellation
    # that arrives as the inner wait completes, and a cancelled worker would run on.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, seconds)):
            await wake.wait()
