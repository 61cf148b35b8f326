"""The operator's Kubernetes writes: two lanes of their own, each with a bounded thread pool,
its own connection pool and a timeout on every request.

Reads come from watch streams (see ``store.py``); this module only writes (status, weights,
scale, annotations, finalizers) and reads the few Secrets a Rollout names. The official
client blocks, so each call runs in the lane's own executor, never in asyncio's default
pool, which nothing in the operator shares with anything else:

- the *urgent* lane carries the passes of Rollouts that are rolling back, aborting or being
  deleted, so pulling traffic back never queues behind ordinary progress;
- the *normal* lane carries everything else;
- the *events* lane carries the operator's Events (``events.py``), with a rate limit of its
  own, so telling people what happened never takes a turn from making it happen.

On the urgent lane, a write that moves traffic (``moving_traffic``: a router's
``set_weight``) takes the next free thread before any other waiting request
(``slots.py``): one abort's route write does not wait behind the status writes of the
aborts before it. The normal lane keeps arrival order: there, putting route writes first
starves the status writes that confirm each step, and 1,000 Rollouts stepping together
took twice as long.

A request that cannot reach the API server marks an outage (``Connectivity``): one log line
when it starts, one when it ends, and every waiting Rollout is woken when it ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from segue import FIELD_MANAGER, GROUP, PLURAL, VERSION
from segue.controller.ratelimit import (
    DEFAULT_BURST,
    DEFAULT_EVENT_BURST,
    DEFAULT_EVENT_QPS,
    DEFAULT_QPS,
    TokenBucket,
    retry_after,
)
from segue.controller.slots import OTHER, TRAFFIC, Slots

log = logging.getLogger(__name__)

Json = dict[str, Any]
T = TypeVar("T")

# Connect and read timeouts of every request, in seconds.
CONNECT_TIMEOUT_S: Final = 3.0
READ_TIMEOUT_S: Final = 10.0
# The asyncio-level deadline: a request thread that hangs past its socket timeouts
# (DNS, a stuck TLS handshake) still frees the pass that waits for it.
CALL_DEADLINE_S: Final = CONNECT_TIMEOUT_S + READ_TIMEOUT_S + 2.0
PROBE_INTERVAL_S: Final = 0.5
# Answers that say the API server is unavailable rather than refusing the request: a gateway
# that cannot reach it (502, 504) or the server itself, starting or stopping (503). Status 0:
# no HTTP answer at all (the client's TLS failures).
UNAVAILABLE: Final = frozenset({0, 502, 503, 504})
# Threads (and connections) per lane; how fast they may send is the rate limit's business
# (``ratelimit.TokenBucket``), so a lane never has fewer requests in flight than it may send.
NORMAL_WORKERS: Final = 32
URGENT_WORKERS: Final = 32
EVENT_WORKERS: Final = 4

_urgent: contextvars.ContextVar[bool] = contextvars.ContextVar("segue_urgent", default=False)
_traffic: contextvars.ContextVar[bool] = contextvars.ContextVar("segue_traffic", default=False)


@contextmanager
def urgent(flag: bool = True) -> Iterator[None]:
    """Writes made inside this block go through the urgent lane."""
    token = _urgent.set(flag)
    try:
        yield
    finally:
        _urgent.reset(token)


def is_urgent() -> bool:
    return _urgent.get()


@contextmanager
def moving_traffic() -> Iterator[None]:
    """Writes made inside this block move traffic (a router's ``set_weight``): on the
    urgent lane they take the next free thread before any other waiting request."""
    token = _traffic.set(True)
    try:
        yield
    finally:
        _traffic.reset(token)


class RequestCounter:
    """Tells its listeners (the operator's metrics) about every API request, by method."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str], None]] = []

    def add(self, method: str) -> None:
        for listener in self.listeners:
            listener(method)


REQUESTS = RequestCounter()


class ApiUnavailable(Exception):
    """The API server could not be reached (connection refused, timed out)."""


class ApiThrottled(Exception):
    """The API server answered 429 (priority and fairness, or a CRD still initialising):
    the lane sends nothing for ``retry_after_s`` and the pass is retried after it."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"throttled by the API server; retrying after {retry_after_s:g}s")
        self.retry_after_s = retry_after_s


class Connectivity:
    """Tracks whether the API server answers, and says so once per outage."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.listeners: list[Callable[[], None]] = []

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, why: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("Kubernetes API unreachable (%s); Rollouts wait for it", why)

    def answered(self) -> None:
        if self.down_since is None:
            return
        outage = time.monotonic() - self.down_since
        self.down_since = None
        log.warning("Kubernetes API reachable again after %.1fs; resuming", outage)
        for listener in self.listeners:
            listener()


def short_error(error: BaseException) -> str:
    """An answer's status and reason, or the error's first line, at most 200 characters."""
    if isinstance(error, ApiException) and error.status:
        return f"HTTP {error.status} {error.reason}"[:200]
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]


class KopfRetries(logging.Filter):
    """kopf logs every retry of its requests (its start-up scan of the API's resources)
    while the API server is away ("Request attempt #3/9 failed; will retry"), one line per
    attempt. Those become the one outage line of ``Kube.unreachable``; anything else kopf
    says passes through."""

    def __init__(self, kube: Kube) -> None:
        super().__init__()
        self._kube = kube

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "failed; will retry" not in message:
            return True
        if "APIForbiddenError" in message:
            return True  # missing RBAC is for a person to see, every time
        if "APITooManyRequestsError" in message:
            # Throttled, or a just-installed CRD's storage initialising: kopf waits as told.
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        self._kube.unreachable(message.split(": ", 1)[-1][:200])
        return False


def unreachable(e: BaseException) -> bool:
    """Whether a request failed without an answer from the API server (connection refused
    or reset, a timeout, a TLS failure) or with one saying it is unavailable
    (:data:`UNAVAILABLE`): an outage, not a refusal."""
    if isinstance(e, ApiException):
        return e.status is None or e.status in UNAVAILABLE
    return isinstance(e, urllib3.exceptions.HTTPError | OSError)


def load_configuration() -> client.Configuration:
    """In-cluster credentials when running in a Pod, else the current KUBECONFIG."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


@dataclass
class Lane:
    """One bounded pool of threads with its own HTTP connections."""

    name: str
    api: client.ApiClient
    executor: ThreadPoolExecutor
    limit: TokenBucket
    # One per thread: a request waits for a free thread here, where no deadline runs, so
    # a queue of requests is never taken for an API server that does not answer. Traffic
    # writes take the next free one first.
    slots: Slots

    @classmethod
    def create(
        cls,
        name: str,
        configuration: client.Configuration,
        workers: int,
        qps: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST,
    ) -> Lane:
        configuration = _copy(configuration)
        configuration.connection_pool_maxsize = workers
        configuration.retries = False
        api = client.ApiClient(configuration)
        call_api: Callable[..., Any] = api.call_api

        def counted(method: str, *args: Any, **kwargs: Any) -> Any:
            REQUESTS.add(method)
            # The generated API methods pass _request_timeout=None when none is given.
            if kwargs.get("_request_timeout") is None:
                kwargs["_request_timeout"] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
            return call_api(method, *args, **kwargs)

        api.call_api = counted  # type: ignore[method-assign]
        # The client imports each API class's module on first use, which takes most of a
        # second; do it now rather than in the first Rollout's first write.
        for api_class in (client.AppsV1Api, client.CoreV1Api, client.CustomObjectsApi):
            api_class(api)
        executor = ThreadPoolExecutor(workers, thread_name_prefix=f"kube-{name}")
        return cls(name, api, executor, TokenBucket(qps, burst), Slots(workers))


def watch_client(configuration: client.Configuration, streams: int) -> client.ApiClient:
    """A client for ``streams`` watch streams held open at once (the informers): a
    connection each, and no retries of urllib3's own, since an informer retries itself.
    Not counted in ``REQUESTS``: a stream is not a request per Rollout."""
    configuration = _copy(configuration)
    configuration.connection_pool_maxsize = max(1, streams)
    configuration.retries = False
    return client.ApiClient(configuration)


def _copy(configuration: client.Configuration) -> client.Configuration:
    copied = client.Configuration()
    copied.__dict__.update(configuration.__dict__)
    return copied


class Kube:
    """Runs blocking client calls on the current lane, with a deadline and the lane's rate
    limit, and notices outages.

    Each lane has a budget of ``qps`` requests a second (``burst`` at once) of its own, so
    pulling traffic back never waits behind ordinary progress for its turn either."""

    def __init__(
        self,
        configuration: client.Configuration,
        connectivity: Connectivity | None = None,
        deadline_s: float = CALL_DEADLINE_S,
        qps: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST,
        event_qps: float = DEFAULT_EVENT_QPS,
        event_burst: int = DEFAULT_EVENT_BURST,
    ) -> None:
        self.configuration = configuration
        self.normal = Lane.create("normal", configuration, NORMAL_WORKERS, qps, burst)
        self.urgent = Lane.create("urgent", configuration, URGENT_WORKERS, qps, burst)
        self.events = Lane.create("events", configuration, EVENT_WORKERS, event_qps, event_burst)
        self.connectivity = connectivity or Connectivity()
        self.deadline_s = deadline_s
        # Requests of the urgent lane under way; while there are any, the normal lane sends
        # nothing new, so on a saturated API server pulling traffic back goes first.
        self._urgent_active = 0
        self._urgent_idle = asyncio.Event()
        self._urgent_idle.set()
        self._probe: asyncio.Task[None] | None = None

    def lane(self) -> Lane:
        return self.urgent if _urgent.get() else self.normal

    async def call(self, fn: Callable[[client.ApiClient], T]) -> T:
        """Run ``fn(api_client)`` on the current lane's pool. An ordinary request waits
        while urgent ones are under way."""
        lane = self.lane()
        if lane is not self.urgent:
            return await self._after_urgent(lane, fn)
        self._urgent_active += 1
        self._urgent_idle.clear()
        try:
            return await self._send(lane, fn)
        finally:
            self._urgent_active -= 1
            if not self._urgent_active:
                self._urgent_idle.set()

    async def call_events(self, fn: Callable[[client.ApiClient], T]) -> T:
        """Run ``fn(api_client)`` on the events lane, once no urgent request is under way."""
        return await self._after_urgent(self.events, fn)

    async def _after_urgent(self, lane: Lane, fn: Callable[[client.ApiClient], T]) -> T:
        await self._urgent_idle.wait()
        return await self._send(lane, fn)

    async def _send(self, lane: Lane, fn: Callable[[client.ApiClient], T]) -> T:
        wait = lane.limit.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        loop = asyncio.get_running_loop()
        try:
            first = lane is self.urgent and _traffic.get()
            async with lane.slots.taken(TRAFFIC if first else OTHER):
                future = loop.run_in_executor(lane.executor, functools.partial(fn, lane.api))
                async with asyncio.timeout(self.deadline_s):
                    result = await future
        except Exception as e:
            if is_status(e, 429):
                assert isinstance(e, ApiException)
                seconds = retry_after(e.headers)
                lane.limit.hold(seconds)
                self.connectivity.answered()
                raise ApiThrottled(seconds) from e
            if unreachable(e):
                why = short_error(e)
                self.unreachable(why)
                raise ApiUnavailable(why) from e
            if isinstance(e, ApiException):
                self.connectivity.answered()
            raise
        self.connectivity.answered()
        return result

    def unreachable(self, why: str) -> None:
        """Something found the API server unreachable: say so once, probe until it is back."""
        self.connectivity.failed(why)
        self._start_probe()

    def _start_probe(self) -> None:
        """While the API server is unreachable, ask it every half second whether it is
        ready (GET /readyz, allowed to everyone), so Rollouts resume the moment it is."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not on the loop (a log record from a thread); the next call starts it
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._wait_for_api(), name="kube-api-probe")

    async def _wait_for_api(self) -> None:
        loop = asyncio.get_running_loop()
        lane = self.urgent
        while self.connectivity.down:
            await asyncio.sleep(PROBE_INTERVAL_S)
            future = loop.run_in_executor(lane.executor, functools.partial(_ready, lane.api))
            try:
                async with asyncio.timeout(5.0):
                    ready = await future
            except Exception:  # still down; the outage was logged when it began
                continue
            if ready:
                self.connectivity.answered()

    def close(self) -> None:
        for lane in (self.normal, self.urgent, self.events):
            lane.executor.shutdown(wait=False, cancel_futures=True)


def _ready(api: client.ApiClient) -> bool:
    request = api.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
    response = api.call_api(*request, _request_timeout=(1.0, 2.0))
    response.read()  # type: ignore[no-untyped-call]
    return bool(response.status == 200)


def is_status(e: BaseException, *codes: int) -> bool:
    return isinstance(e, ApiException) and e.status in codes


class Rollouts:
    """Writes to Rollout objects (or, with ``plural="migrations"``, Migrations)."""

    def __init__(self, kube: Kube, plural: str = PLURAL) -> None:
        self._kube = kube
        self._plural = plural

    async def patch_status(
        self, namespace: str, name: str, status: Json, resource_version: str | None
    ) -> Json:
        """Merge-patch the status subresource. With ``resource_version`` the write fails
        (409) if the Rollout changed since it was read, so a decision never lands on state
        it did not see. Returns the updated object."""
        body: Json = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        obj = await self._kube.call(
            lambda api: client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, self._plural, name, body, field_manager=FIELD_MANAGER
            )
        )
        return obj if isinstance(obj, dict) else {}

    async def patch_metadata(self, namespace: str, name: str, metadata: Json) -> Json | None:
        """Merge-patch metadata (annotations, finalizers). None when the Rollout is gone."""
        body = {"metadata": metadata}
        try:
            obj = await self._kube.call(
                lambda api: client.CustomObjectsApi(api).patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, self._plural, name, body, field_manager=FIELD_MANAGER
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj if isinstance(obj, dict) else None

    async def json_patch(self, namespace: str, name: str, ops: list[Json]) -> Json | None:
        """A JSON patch of the Rollout (finalizers). None when the Rollout is gone."""
        try:
            obj = await self._kube.call(
                lambda api: client.CustomObjectsApi(api).patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    self._plural,
                    name,
                    ops,
                    field_manager=FIELD_MANAGER,
                    _content_type="application/json-patch+json",
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj if isinstance(obj, dict) else None

    async def get(self, namespace: str, name: str) -> Json | None:
        """One read, only to recover after a lost race (409) whose watch event is late."""
        try:
            obj = await self._kube.call(
                lambda api: client.CustomObjectsApi(api).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, self._plural, name
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj if isinstance(obj, dict) else None


class Secrets:
    """Reads the few Secrets a Rollout names (metric provider credentials, webhook URLs)."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def read(self, namespace: str, name: str) -> dict[str, str]:
        secret = await self._kube.call(
            lambda api: client.CoreV1Api(api).read_namespaced_secret(name, namespace)
        )
        data = secret.data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
