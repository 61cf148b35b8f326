"""Watching one kind of object on a thread of its own, remembering when each change
arrived."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes import watch


@dataclass
class Seen:
    """One watch event as a benchmark saw it: when it arrived (Unix time) and the object."""

    at: float
    type: str
    obj: dict[str, Any]


@dataclass
class ObjectWatch:
    """A watch stream of one kind in one namespace on a thread of its own, remembering when
    each event arrived, so a benchmark can ask when an object first looked some way without
    polling the API server. The thread ends by itself after ``max_s`` seconds, and within
    ``chunk_s`` of ``stop()``.

    ``list_fn`` and ``args`` are a namespaced list call of the Kubernetes client, e.g.
    ``client.AppsV1Api(api).list_namespaced_deployment, namespace``."""

    list_fn: Callable[..., Any]
    args: tuple[Any, ...]
    guard: Callable[[], None] | None = None  # called while waiting; raises to give up
    max_s: float = 900.0
    chunk_s: int = 5
    events: dict[str, list[Seen]] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ObjectWatch:
        self._thread = threading.Thread(target=self._run, daemon=True, name="object-watch")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.chunk_s + 5)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        version: str | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            kwargs: dict[str, Any] = {
                "timeout_seconds": self.chunk_s,
                "_request_timeout": (5, self.chunk_s + 10),
            }
            if version:
                kwargs["resource_version"] = version
            try:
                stream: Callable[..., Iterator[dict[str, Any]]] = watch.Watch().stream  # type: ignore[no-untyped-call]
                for event in stream(self.list_fn, *self.args, **kwargs):
                    at = time.time()
                    obj: dict[str, Any] = event["raw_object"]
                    if event["type"] == "ERROR":  # e.g. 410 Gone: start over from a listing
                        version = None
                        break
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion") or version
                    with self._cond:
                        self.events.setdefault(str(meta.get("name")), []).append(
                            Seen(at, str(event["type"]), obj)
                        )
                        self._cond.notify_all()
            except Exception:  # a dropped stream: resume from the last version seen
                time.sleep(0.2)

    def first(
        self, name: str, ok: Callable[[dict[str, Any]], bool], after: float = 0.0
    ) -> Seen | None:
        """The first event at or after ``after`` (Unix time) in which ``name`` was ``ok``."""
        with self._cond:
            for seen in self.events.get(name, []):
                if seen.at >= after and seen.type != "DELETED" and ok(seen.obj):
                    return seen
        return None

    def latest(self, name: str) -> dict[str, Any] | None:
        with self._cond:
            seen = self.events.get(name)
            return seen[-1].obj if seen and seen[-1].type != "DELETED" else None

    def wait(
        self,
        what: str,
        name: str,
        ok: Callable[[dict[str, Any]], bool],
        after: float = 0.0,
        timeout: float = 60.0,
    ) -> Seen:
        """Block until ``first(name, ok, after)`` exists; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.first(name, ok, after)  # the lock is re-entrant
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
                if self.guard is not None:
                    self.guard()
                self._cond.wait(min(left, 1.0))
