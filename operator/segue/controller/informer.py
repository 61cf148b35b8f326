"""A list-then-watch stream of one kind, on a thread of its own, without kopf's machinery.

kopf runs every watch event through a per-object worker, a batch window, a cause
detection, a handler state and a keyword-argument build before the handler sees it: about
3 ms of CPU per event on a shared 2-core machine. Segue's only consumers of an event are
the store and a wake-up, so every kind it reads comes through an informer, which hands
each event's object, parsed from the stream's JSON and nothing more, to a callback on the
event loop.

What it keeps of kopf's watching:

- a listing first (each object delivered with type ``None``), then a watch from the
  listing's ``resourceVersion``, with bookmarks, re-opened where it left off when the
  server ends it (``timeoutSeconds``);
- a watch the server no longer serves from that version (410 Gone, or an ``ERROR`` event
  with code 410) lists again. Unlike kopf, the new listing is compared with what was
  known: an object deleted while the stream was down is delivered as ``DELETED``;
- a failure (refused connection, 5xx, a broken stream) is retried after a back-off that
  grows to ``MAX_BACKOFF_S``, so the stream is back within 2 s of the API server. One that
  means the API server is away goes to ``outage`` (the operator's one line per outage);
  a 429 (throttled, or a CRD installed a moment ago whose storage is still starting) is
  only waited out; any other is logged once per run of failures, and its end once.

``listed`` is called once, after the first listing has been delivered. ``stop`` shuts the
open stream's socket down, which ends the thread's read at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Protocol, cast

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from segue.controller.kube import Json

log = logging.getLogger(__name__)

# Ask the server to end each watch after this long; the client waits a little longer.
WATCH_TIMEOUT_S: Final = 300
CONNECT_TIMEOUT_S: Final = 5.0
LIST_READ_TIMEOUT_S: Final = 60.0
# The pause after each failure in a row; the last one repeats.
BACKOFFS_S: Final = (0.5, 1.0, 1.0, 2.0)
MAX_BACKOFF_S: Final = BACKOFFS_S[-1]
GONE: Final = 410
TOO_MANY_REQUESTS: Final = 429

Key = tuple[str, str]
Deliver = Callable[[str | None, Json], None]


class Response(Protocol):
    """The part of urllib3's HTTPResponse an informer reads."""

    data: bytes

    def stream(
        self, amt: int | None = ..., decode_content: bool | None = ...
    ) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class ListFn(Protocol):
    """The list (``watch=True``: watch) call of one kind in one scope (``lister``), called
    with the informer's keyword arguments and answering an unread response."""

    def __call__(self, **kwargs: Any) -> Response: ...


class Gone(Exception):
    """The server no longer serves a watch from this resourceVersion."""


# The informer's keyword arguments, as the API server's query parameters.
_QUERY: Final = {
    "watch": "watch",
    "resource_version": "resourceVersion",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "timeout_seconds": "timeoutSeconds",
}


def lister(
    api: ApiClient,
    group: str,
    version: str,
    plural: str,
    namespace: str = "",
    label_selector: str = "",
) -> ListFn:
    """The list (and, with ``watch=True``, watch) call of any kind, core or not, in one
    namespace or all, answered as an unread response; a non-2xx answer raises
    ``ApiException`` as the generated methods do."""
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"

    def list_objects(**kwargs: Any) -> Response:
        query: list[tuple[str, Any]] = [("labelSelector", label_selector)] if label_selector else []
        for name, param in _QUERY.items():
            value = kwargs.get(name)
            if value is not None:
                query.append((param, str(value).lower() if isinstance(value, bool) else value))
        request = api.param_serialize(
            "GET",
            path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        answer = api.call_api(*request, _request_timeout=kwargs.get("_request_timeout"))
        if not 200 <= answer.status <= 299:
            answer.read()  # type: ignore[no-untyped-call]
            raise ApiException.from_response(http_resp=answer, body=None, data=None)
        return cast(Response, answer.response)

    return list_objects


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def lines(response: Response) -> Iterator[bytes]:
    """The stream's JSON lines, however its chunks split them."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


class Informer:
    def __init__(
        self,
        name: str,
        list_fn: ListFn,
        deliver: Deliver,
        listed: Callable[[], None],
        outage: Callable[[BaseException], bool] = lambda e: False,
    ) -> None:
        """``outage``: takes a failure that means the API server is away, and says whether
        it did (the operator reports an outage once for everything that meets it, so the
        informer then adds no line of its own)."""
        self.name = name
        self._list = list_fn
        self._deliver = deliver
        self._listed = listed
        self._outage = outage
        self._reported = False
        self._stopping = threading.Event()
        self._response: Response | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # What the last listing and the events since say exists: a new listing reports
        # the difference as deletions.
        self.known: set[Key] = set()
        self.resource_version: str | None = None
        # Failed attempts in a row (the back-off grows with them).
        self.failures = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def deliver(type_: str | None, obj: Json) -> None:
            loop.call_soon_threadsafe(self._deliver, type_, obj)

        def listed() -> None:
            loop.call_soon_threadsafe(self._listed)

        self._thread = threading.Thread(
            target=self.run, args=(deliver, listed), name=f"watch-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the thread's read at once, without waiting for it: closing a response
        another thread is reading blocks until that read returns, which on a quiet watch
        may be minutes. Shutting the socket down wakes the read first."""
        self._stopping.set()
        with self._lock:
            response = self._response
        if response is not None:
            _abort(response)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self, deliver: Deliver, listed: Callable[[], None]) -> None:
        """The thread: list, watch, and again, until stopped."""
        first = True
        while not self.stopping:
            try:
                if self.resource_version is None:
                    self.relist(deliver)
                    if first:
                        first = False
                        listed()
                self.watch(deliver)
            except Exception as e:
                if self.stopping:
                    break
                status = getattr(e, "status", None)
                # 410 Gone, as an ERROR event or as the answer: list again at once.
                if isinstance(e, Gone) or status == GONE:
                    self.resource_version = None
                    continue
                failures = self.failures
                self.failures += 1
                if status == TOO_MANY_REQUESTS:
                    # Throttled, or a just-installed CRD's storage still initialising
                    # (answered 429 for about a second): wait, as the server asks.
                    log.debug("watch of %s throttled (%s); retrying", self.name, _brief(e))
                elif not self._outage(e) and not self._reported:
                    self._reported = True
                    self._report(e)
                self._stopping.wait(BACKOFFS_S[min(failures, len(BACKOFFS_S) - 1)])

    def relist(self, deliver: Deliver) -> None:
        response = self._open(_request_timeout=(CONNECT_TIMEOUT_S, LIST_READ_TIMEOUT_S))
        body = json.loads(response.data)
        items: list[Json] = body.get("items") or []
        seen = {key_of(obj) for obj in items}
        for namespace, name in self.known - seen:
            deliver("DELETED", {"metadata": {"namespace": namespace, "name": name}})
        for obj in items:
            deliver(None, obj)
        self.known = seen
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "")

    def watch(self, deliver: Deliver) -> None:
        response = self._open(
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_S,
            _request_timeout=(CONNECT_TIMEOUT_S, WATCH_TIMEOUT_S + 30),
        )
        try:
            for line in lines(response):
                event = json.loads(line)
                type_, obj = event.get("type"), event.get("object") or {}
                if type_ == "ERROR":
                    if obj.get("code") == GONE:
                        raise Gone(obj.get("message", ""))
                    raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.resource_version = str(version)
                if type_ == "BOOKMARK":
                    continue
                key = key_of(obj)
                if type_ == "DELETED":
                    self.known.discard(key)
                else:
                    self.known.add(key)
                deliver(type_, obj)
        finally:
            with self._lock:
                self._response = None
            response.close()

    def _report(self, e: BaseException) -> None:
        """One line per run of failures; a refusal says what to grant."""
        status = getattr(e, "status", None)
        if status in (401, 403):
            log.error(
                "cannot list and watch %s (%s): grant the operator's ServiceAccount list "
                "and watch on them; no Rollout is handled until they are listed",
                self.name,
                _brief(e),
            )
        else:
            log.warning(
                "watch of %s broke (%s); retrying every %.0f s at most",
                self.name,
                _brief(e),
                MAX_BACKOFF_S,
            )

    def _open(self, **kwargs: Any) -> Response:
        response = self._list(_preload_content=False, **kwargs)
        self.failures = 0
        if self._reported:
            self._reported = False
            log.info("watch of %s is back", self.name)
        with self._lock:
            self._response = response
        if self.stopping:
            response.close()
            raise RuntimeError("stopping")
        return response


def _abort(response: Response) -> None:
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        # A socket already closed (the stream ended meanwhile) has nothing to wake.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    # The reading thread closes the response itself once its read fails.


def _brief(e: BaseException) -> str:
    status = getattr(e, "status", None)
    if status:
        reason = getattr(e, "reason", "") or ""
        return f"HTTP {status} {reason}".rstrip()
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
