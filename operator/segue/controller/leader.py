"""One active operator: leader election on a ``coordination.k8s.io/v1`` Lease.

Every operator process is a candidate. One holds the Lease and runs kopf; the others stand
by without watching, analysing or writing anything, and take over when the holder stops
renewing. The shape follows client-go's leader election, except that the holder leads on
through an API server outage instead of giving up:

- A candidate never trusts another machine's clock. It notes, on its own monotonic clock,
  when it last saw the Lease's claim change (holder, renew time, duration) and considers the
  Lease expired once it has seen no change for the holder's ``leaseDurationSeconds``.
- A standby whose read (or claim) fails forgets what it saw: its clock starts again at its
  next successful read, so after an outage it must see a full lease duration without a
  renewal before it takes over.
- Every write is a replace guarded by ``resourceVersion``; a 409 means another candidate
  wrote first, so the Lease is read again.
- The holder renews every ``retry_period``. A renewal that fails:

  - without an answer from the API server (connection refused or reset, a timeout, a TLS
    failure, or 502/503/504, the server saying it is unavailable; :func:`unreachable`): the
    holder leads on. Nobody can write the Lease while nobody reaches the server, so nobody
    can take it;
  - because the server says the Lease is someone else's (a 409, then another holder): the
    holder gives up at once;
  - with any other answer (403, 429, 500, ...): the holder gives up once ``renew_deadline``
    has passed since its *anchor* (:class:`Tenure`): its last renewal, or the last attempt
    of an outage longer than a standby's read interval (``Timing.standby_gap``).

  Giving up stops kopf and exits the process non-zero before ``anchor + lease_duration``,
  which is the earliest a standby can take over.
- On a graceful shutdown the holder releases the Lease (no holder, 1 s duration), so a
  standby takes over at its next look instead of waiting for expiry.

Why the holder keeps the Lease across an outage of the API server. Nobody can write during
the outage. A standby whose read fails during it restarts its clock at its first read after
the server's return, and cannot claim before a lease duration after that; the holder renews
within a retry period of the return (one request timeout more if an attempt hung across it),
and the standby sees that renewal as a change. An outage shorter than a standby's read
interval may go unnoticed by the standby, whose clock then runs from the last renewal it saw;
the holder's renewals resume within a retry period of such an outage's end, inside the lease
duration. When the server comes back answering errors instead (403 while its
authorizer starts, 500), the holder's deadline runs from its anchor: after an outage longer
than ``standby_gap``, every standby has failed a read inside it, so none claims before the
outage's last attempt + ``lease_duration``, and the holder is gone by then; after a shorter
one the anchor is the last renewal, exactly as without an outage.

A partition is the one case where two processes act: the holder is cut off from the API
server while a standby is not. The standby reads the Lease unchanged for a lease duration
and takes over. The old holder leads on, but its writes go to the server it cannot reach
and fail; when it reaches the server again, its next renewal meets a 409 (the Lease's
resourceVersion changed), it reads the new holder and exits at once. Its status writes are
guarded by resourceVersion as well, so a pass it started on what it saw before the takeover
fails with a 409 instead of overwriting the new leader's status, and its router writes come
only after a status write that succeeded. Not covered: a holder whose Lease requests all go
unanswered (time out) while its other requests get through; that double action lasts until
one of its Lease requests does.

With the defaults (10 s lease, renewal and retries every 2 s, 2 s per request) a standby
takes over within ``retry_period + lease_duration + request_timeout`` = 14 s of the holder
dying without a word (kill -9), and within ``retry_period + request_timeout`` of a release.

The decisions (:func:`observe`, :func:`judge`, :class:`Standby`, :class:`Tenure`,
:func:`claim_spec`, :func:`release_spec`) are pure and take the time as an argument;
:class:`KubeLeaseStore` is the thin blocking I/O, and :class:`Elector` runs it in a
dedicated one-thread executor, never in asyncio's default pool nor beside the operator's
other Kubernetes calls, so a slow apiserver answer to anything else never delays a renewal.
Lease requests have their own API client and are not counted in the operator's request
metrics. The operator's own Kubernetes client logs an outage (``segue.controller.kube``);
the elector adds at most one INFO line when its renewals start failing without an answer and
one when a renewal goes through again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import signal
import socket
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

import aiohttp.web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from segue.controller.kube import load_configuration, unreachable

log = logging.getLogger(__name__)

Json = dict[str, Any]
T = TypeVar("T")

LEASE_GROUP: Final = "coordination.k8s.io"
LEASE_VERSION: Final = "v1"
LEASE_PLURAL: Final = "leases"
DEFAULT_LEASE_NAME: Final = "segue-operator"
# On the holder's Lease while it serves (runs kopf), absent while it only holds it: with
# shards, a holder may hold its Lease and wait for the end of a resize (segue.controller.shards).
SERVING_ANNOTATION: Final = "segue.dev/serving"
# A released Lease keeps this duration, so a candidate that reads it late still sees it expire.
RELEASED_DURATION: Final = 1
# After losing the Lease, how long kopf may take to stop before the process exits anyway
# (never past Timing.stop_by): another process may already be acting.
STOP_GRACE: Final = 2.0
# How much longer than its own timeout the elector waits for a request: one queued behind a
# slow one in the elector's single thread.
CALL_SLACK: Final = 1.0


@dataclass(frozen=True)
class Timing:
    """How long a Lease lasts, when the holder gives up, and how often everyone looks."""

    lease_duration: float = 10.0
    renew_deadline: float = 7.0
    retry_period: float = 2.0
    request_timeout: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")
        if self.request_timeout <= 0 or self.request_timeout > self.renew_deadline:
            raise ValueError("need 0 < request_timeout <= renew_deadline")

    def stop_by(self, anchor: float) -> float:
        """The holder must have stopped acting by then: a margin before the earliest moment
        (``anchor + lease_duration``, see :class:`Tenure`) a standby could take over."""
        margin = min(1.0, (self.lease_duration - self.renew_deadline) / 2)
        return anchor + self.lease_duration - margin

    def call_limit(self) -> float:
        """How long the elector waits for one Lease request."""
        return self.request_timeout + CALL_SLACK

    def standby_gap(self) -> float:
        """The longest a standby goes between starting two reads: a read takes at most
        ``call_limit``, the next starts at most a retry period later. An outage longer than
        this fails a read of every standby, which then restarts its clock."""
        return self.call_limit() + self.retry_period

    def worst_case_failover(self) -> float:
        """Seconds from the holder's death to a standby's claim, at most: the standby sees
        the last renewal up to one retry period late, waits a full lease duration from then,
        and needs one request to claim."""
        return self.retry_period + self.lease_duration + self.request_timeout


# --- the pure part --------------------------------------------------------------------------


def micro_time(t: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with exactly six fractional digits, which is
    what the API server's parser requires (``datetime.isoformat`` drops them at .000000)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease that leader election reads."""

    holder: str  # "" when nobody holds it
    duration: float | None
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int
    resource_version: str

    @classmethod
    def from_object(cls, obj: Json) -> LeaseRecord:
        spec = obj.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=float(duration) if isinstance(duration, int | float) else None,
            acquire_time=_parse_time(spec.get("acquireTime")),
            renew_time=_parse_time(spec.get("renewTime")),
            transitions=transitions if isinstance(transitions, int) else 0,
            resource_version=str((obj.get("metadata") or {}).get("resourceVersion") or ""),
        )

    def claim(self) -> tuple[object, ...]:
        """What changes when a holder claims or renews; not the resourceVersion, which also
        changes when someone only edits a label."""
        return (self.holder, self.duration, self.acquire_time, self.renew_time, self.transitions)


@dataclass(frozen=True)
class Seen:
    """A Lease as this candidate saw it, and when (on its own monotonic clock) its claim last
    changed."""

    record: LeaseRecord
    changed_at: float


def observe(previous: Seen | None, record: LeaseRecord, now: float) -> Seen:
    if previous is not None and previous.record.claim() == record.claim():
        return Seen(record, previous.changed_at)
    return Seen(record, now)


@dataclass(frozen=True)
class Acquire:
    """Claim the Lease now. ``reason``: absent, released, expired or ours."""

    reason: str


@dataclass(frozen=True)
class Wait:
    """Someone else holds a live Lease: look again at ``until`` (monotonic)."""

    holder: str
    until: float


def expires_at(seen: Seen, timing: Timing) -> float:
    duration = seen.record.duration
    return seen.changed_at + (duration if duration and duration > 0 else timing.lease_duration)


def judge(identity: str, seen: Seen | None, now: float, timing: Timing) -> Acquire | Wait:
    """Whether a candidate may claim the Lease it has seen (None: there is no Lease)."""
    if seen is None:
        return Acquire("absent")
    holder = seen.record.holder
    if not holder:
        return Acquire("released")
    if holder == identity:
        # This process's own claim, e.g. read back after a write whose answer was lost.
        return Acquire("ours")
    expiry = expires_at(seen, timing)
    if now >= expiry:
        return Acquire("expired")
    return Wait(holder, min(now + timing.retry_period, expiry))


def renewal_due(last_attempt: float, timing: Timing) -> float:
    return last_attempt + timing.retry_period


@dataclass
class Standby:
    """What a candidate knows of the Lease while it stands by; no I/O, the time is an
    argument.

    ``seen`` is the Lease as last read; None when there is none, or when nothing was read
    since the candidate started or since its last failed request. ``blind_since``: when the
    current streak of failed requests began, None when the last one succeeded."""

    identity: str
    timing: Timing
    seen: Seen | None = None
    blind_since: float | None = None

    def read(self, record: LeaseRecord | None, now: float) -> Acquire | Wait:
        """A read went through: ``record`` is the Lease, None when there is none."""
        self.seen = observe(self.seen, record, now) if record is not None else None
        self.blind_since = None
        return judge(self.identity, self.seen, now, self.timing)

    def failed(self, now: float) -> float:
        """A read or a claim failed, whatever the error. What was seen may be stale, and the
        holder's renewals may have failed for the same reason, so the clock starts again at
        the next read: a takeover needs a full lease duration without a renewal seen from
        then on. Returns when to try again."""
        self.seen = None
        if self.blind_since is None:
            self.blind_since = now
        return now + self.timing.retry_period


@dataclass
class Tenure:
    """What the holder knows of its hold on the Lease, on its own monotonic clock; no I/O,
    the time is an argument.

    - ``renewed_at``: the start of the last renewal that went through.
    - ``anchor``: no standby can claim the Lease before ``anchor + lease_duration``. It is the
      last renewal, or the last attempt of a run of unanswered attempts longer than
      ``timing.standby_gap()``: such an outage failed a read of every standby, whose clock
      then started again after it.
    - ``outage_since``: the first attempt of the current run of unanswered attempts.
    - ``refused``: the error with which the API server answered the last attempt. Only then
      does the renew deadline apply; while nobody reaches the server nobody can take the
      Lease, and the holder leads on.
    """

    timing: Timing
    renewed_at: float
    anchor: float = field(init=False)
    outage_since: float | None = None
    refused: str | None = None

    def __post_init__(self) -> None:
        self.anchor = self.renewed_at

    def renewed(self, started: float) -> None:
        """A renewal that started at ``started`` went through."""
        self.renewed_at = self.anchor = started
        self.outage_since = None
        self.refused = None

    def unanswered(self, started: float) -> None:
        """An attempt that started at ``started`` got no answer (:func:`unreachable`)."""
        if self.outage_since is None:
            self.outage_since = started
        if started - self.outage_since > self.timing.standby_gap():
            self.anchor = max(self.anchor, started)
        self.refused = None

    def answered(self, error: str) -> None:
        """The API server answered an attempt with an error other than unavailability."""
        self.outage_since = None
        self.refused = error

    def deadline(self) -> float | None:
        """When the holder gives up unless a renewal goes through first; None while the
        last attempt went unanswered (or none failed)."""
        if self.refused is None:
            return None
        return self.anchor + self.timing.renew_deadline

    def lost(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def stop_by(self) -> float:
        """Once it has given up, the holder must have stopped acting by then."""
        return self.timing.stop_by(self.anchor)


def claim_spec(identity: str, record: LeaseRecord | None, now: datetime, timing: Timing) -> Json:
    """The Lease spec with which ``identity`` takes or renews the Lease."""
    ours = record is not None and record.holder == identity
    transitions = 0 if record is None else record.transitions + (0 if ours else 1)
    acquired = record.acquire_time if ours and record and record.acquire_time else now
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(timing.lease_duration)),
        "acquireTime": micro_time(acquired),
        "renewTime": micro_time(now),
        "leaseTransitions": transitions,
    }


def release_spec(record: LeaseRecord, now: datetime) -> Json:
    """The Lease spec that gives the Lease up: no holder, so any candidate claims it at once."""
    spec: Json = {
        "leaseDurationSeconds": RELEASED_DURATION,
        "renewTime": micro_time(now),
        "leaseTransitions": record.transitions,
    }
    if record.acquire_time:
        spec["acquireTime"] = micro_time(record.acquire_time)
    return spec


def lease_object(
    base: Json | None,
    namespace: str,
    name: str,
    spec: Json,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str | None] | None = None,
) -> Json:
    """A whole Lease for create or replace: ``base``'s metadata (labels, annotations and the
    resourceVersion that guards the write) with a new spec, ``labels`` set over the base's,
    and ``annotations`` set over the base's (None: removed)."""
    metadata: Json = {"name": name, "namespace": namespace}
    if base is not None:
        old = base.get("metadata") or {}
        metadata.update(
            {k: old[k] for k in ("labels", "annotations", "resourceVersion") if k in old}
        )
    if labels:
        metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    if annotations:
        merged = {**(metadata.get("annotations") or {}), **annotations}
        kept = {k: v for k, v in merged.items() if v is not None}
        if kept:
            metadata["annotations"] = kept
        else:
            metadata.pop("annotations", None)
    return {
        "apiVersion": f"{LEASE_GROUP}/{LEASE_VERSION}",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


def standing_by_message(where: str, record: LeaseRecord, now: datetime) -> str:
    if record.renew_time is None:
        renewed = "never renewed"
    else:
        renewed = f"renewed {max(0.0, (now - record.renew_time).total_seconds()):.1f}s ago"
    return f"standing by: Lease {where} is held by {record.holder} ({renewed})"


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_identity() -> str:
    """Host name and process id: unique among live processes, and the same again when a
    container restarts in the same pod (pid 1), which may then reclaim its own Lease."""
    return f"{socket.gethostname()}-{os.getpid()}"


def lease_namespace(flag: str | None, environ: dict[str, str], namespaces: list[str]) -> str:
    """--leader-election-namespace, else POD_NAMESPACE, else the first watched namespace,
    else "default"."""
    return flag or environ.get("POD_NAMESPACE") or (namespaces[0] if namespaces else "default")


# --- the I/O -------------------------------------------------------------------------------


class Conflict(Exception):
    """A write lost a race (409): the Lease changed since it was read, or already exists."""


class LeaseGone(Exception):
    """The Lease was deleted under its holder."""


class LeaseStore(Protocol):
    """Blocking reads and writes of one Lease."""

    namespace: str
    name: str

    def get(self) -> Json | None: ...

    def create(self, body: Json) -> Json: ...

    def replace(self, body: Json) -> Json: ...


def make_api_client() -> client.ApiClient:
    """An API client of its own. No urllib3 retries: each request is bounded by the request
    timeout alone, and the elector's loop does the retrying."""
    configuration = load_configuration()
    configuration.retries = 0
    return client.ApiClient(configuration)


class KubeLeaseStore:
    """One Lease through the API server. Requests go through the generic object API with
    plain JSON, so MicroTime fields are sent exactly as :func:`micro_time` writes them."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, timeout: float) -> None:
        self.namespace = namespace
        self.name = name
        self._objects = client.CustomObjectsApi(api)
        self._timeout = timeout

    def get(self) -> Json | None:
        try:
            obj = self._objects.get_namespaced_custom_object(
                LEASE_GROUP, LEASE_VERSION, self.namespace, LEASE_PLURAL, self.name,
                _request_timeout=self._timeout,
            )  # fmt: skip
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj if isinstance(obj, dict) else None

    def create(self, body: Json) -> Json:
        try:
            obj = self._objects.create_namespaced_custom_object(
                LEASE_GROUP, LEASE_VERSION, self.namespace, LEASE_PLURAL, body,
                _request_timeout=self._timeout,
            )  # fmt: skip
        except ApiException as e:
            if e.status == 409:
                raise Conflict(str(e.reason)) from None
            raise
        return obj if isinstance(obj, dict) else {}

    def replace(self, body: Json) -> Json:
        try:
            obj = self._objects.replace_namespaced_custom_object(
                LEASE_GROUP, LEASE_VERSION, self.namespace, LEASE_PLURAL, self.name, body,
                _request_timeout=self._timeout,
            )  # fmt: skip
        except ApiException as e:
            if e.status == 409:
                raise Conflict(str(e.reason)) from None
            if e.status == 404:
                raise LeaseGone() from None
            raise
        return obj if isinstance(obj, dict) else {}

    def list(self) -> list[Json]:
        """Every Lease of the namespace (shards look at their group's)."""
        answer = self._objects.list_namespaced_custom_object(
            LEASE_GROUP, LEASE_VERSION, self.namespace, LEASE_PLURAL,
            _request_timeout=self._timeout,
        )  # fmt: skip
        items = answer.get("items") if isinstance(answer, dict) else None
        return [item for item in items or [] if isinstance(item, dict)]


def elector_for(
    namespace: str,
    name: str,
    timing: Timing | None = None,
    labels: dict[str, str] | None = None,
) -> Elector:
    """An elector for this process on the Lease ``namespace``/``name``, with its own API
    client; ``labels`` go on the Lease whenever it writes it."""
    timing = timing or Timing()
    store = KubeLeaseStore(make_api_client(), namespace, name, timing.request_timeout)
    return Elector(store, default_identity(), timing, labels=dict(labels or {}))


@dataclass(frozen=True)
class Taken:
    """A renewal found the Lease held by another process (or by nobody)."""

    reason: str


# How the elector names an outage among the failures it has logged.
OUTAGE: Final = "unreachable"


def describe(e: BaseException) -> str:
    if isinstance(e, ApiException):
        return f"{e.status} {e.reason}"
    if isinstance(e, TimeoutError):
        return "timed out"
    text = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass
class Elector:
    """Claims, holds and releases one Lease. Blocking calls run in a one-thread executor of
    its own, each bounded by ``timing.request_timeout``."""

    store: LeaseStore
    identity: str
    timing: Timing = field(default_factory=Timing)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = utc_now
    # Written on the Lease with every claim and renewal.
    labels: dict[str, str] = field(default_factory=dict)
    # Whether this process serves (runs kopf): SERVING_ANNOTATION on the Lease from the next
    # renewal on. Only a holder serves; a claim and a release clear it.
    serving: bool = field(default=False, init=False)
    _executor: concurrent.futures.ThreadPoolExecutor = field(init=False, repr=False)
    _obj: Json | None = field(default=None, init=False, repr=False)
    _record: LeaseRecord | None = field(default=None, init=False, repr=False)
    renewed_at: float = field(default=0.0, init=False)
    tenure: Tenure | None = field(default=None, init=False)
    leading: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="segue-leader"
        )

    @property
    def where(self) -> str:
        return f"{self.store.namespace}/{self.store.name}"

    def _body(self, base: Json | None, spec: Json) -> Json:
        mark = "true" if self.serving and self.leading else None
        return lease_object(
            base, self.store.namespace, self.store.name, spec,
            labels=self.labels, annotations={SERVING_ANNOTATION: mark},
        )  # fmt: skip

    async def call(self, fn: Callable[..., T], *args: Any, limit: float | None = None) -> T:
        """A blocking request on the elector's own thread, bounded like its own."""
        return await self._call(fn, *args, limit=limit)

    async def _call(self, fn: Callable[..., T], *args: Any, limit: float | None = None) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(fn, *args))
        # The request has its own timeout; this bounds the wait for it (a request still
        # queued behind a slow one) as well.
        wait = self.timing.call_limit() if limit is None else limit
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for can swallow a cancellation
        # that arrives as the call completes, and a cancelled standby would never stop.
        async with asyncio.timeout(max(0.0, wait)):
            return await future

    def _took(self, obj: Json, started: float) -> None:
        self._obj = obj
        self._record = LeaseRecord.from_object(obj)
        self.renewed_at = started

    def stop_by(self) -> float:
        """Once it has given up the Lease, this process must have stopped acting by then."""
        anchor = self.tenure.anchor if self.tenure is not None else self.renewed_at
        return self.timing.stop_by(anchor)

    async def acquire(self) -> None:
        """Return once this process holds the Lease. Logs one line when standing by (again
        only if the holder changes), one when it becomes the leader, and one per kind of
        failure (an outage is one kind, and its end adds one line)."""
        standby = Standby(self.identity, self.timing)
        announced: str | None = None
        failing: str | None = None
        while True:
            try:
                obj = await self._call(self.store.get)
            except Exception as e:  # any failure: forget what was seen, look again later
                failing = self._report(failing, "reading", e)
                await asyncio.sleep(max(0.0, standby.failed(self.clock()) - self.clock()))
                continue
            blind_since = standby.blind_since
            now = self.clock()
            decision = standby.read(LeaseRecord.from_object(obj) if obj else None, now)
            if failing == OUTAGE and blind_since is not None:
                log.info(
                    "leader election: Lease %s readable again after %.1fs; a takeover now "
                    "needs %gs without a renewal",
                    self.where, now - blind_since, self.timing.lease_duration,
                )  # fmt: skip
                failing = None
            seen = standby.seen
            if isinstance(decision, Wait):
                failing = None
                if seen is not None and decision.holder != announced:
                    log.info(standing_by_message(self.where, seen.record, self.wall()))
                    announced = decision.holder
                await asyncio.sleep(max(0.0, decision.until - self.clock()))
                continue
            previous = seen.record if seen else None
            body = self._body(obj, claim_spec(self.identity, previous, self.wall(), self.timing))
            started = self.clock()
            try:
                if obj is None:
                    written = await self._call(self.store.create, body)
                else:
                    written = await self._call(self.store.replace, body)
            except (Conflict, LeaseGone):
                continue  # someone else wrote first: read again now
            except Exception as e:
                failing = self._report(failing, "claiming", e)
                await asyncio.sleep(max(0.0, standby.failed(self.clock()) - self.clock()))
                continue
            self._took(written, started)
            self.leading = True
            how = {
                "absent": "created it",
                "released": "it was free",
                "expired": f"{previous.holder if previous else '?'} stopped renewing it",
                "ours": "it was already ours",
            }[decision.reason]
            log.info("became leader: Lease %s is held by %s (%s)", self.where, self.identity, how)
            return

    def _report(self, failing: str | None, doing: str, e: BaseException) -> str:
        """Log a failure once per kind, not once per attempt; an outage is one kind."""
        if unreachable(e):
            if failing != OUTAGE:
                log.warning(
                    "leader election: %s Lease %s failed: API server unreachable (%s); "
                    "retrying every %gs",
                    doing, self.where, describe(e), self.timing.retry_period,
                )  # fmt: skip
            return OUTAGE
        text = describe(e)
        if text != failing:
            forbidden = isinstance(e, ApiException) and e.status == 403
            log.log(
                logging.ERROR if forbidden else logging.WARNING,
                "leader election: %s Lease %s failed: %s; retrying every %gs",
                doing, self.where, text, self.timing.retry_period,
            )  # fmt: skip
        return text

    async def hold(self) -> str:
        """Renew the Lease every retry period for as long as it may; return why it may not
        (after which this process must stop acting). Cancel it to stop renewing.

        While renewals get no answer from the API server it leads on; it gives up when the
        server says the Lease is someone else's, or once it has answered with errors past
        the :class:`Tenure`'s deadline."""
        tenure = self.tenure = Tenure(self.timing, self.renewed_at)
        last_attempt = self.renewed_at
        logged: set[str] = set()  # failures logged since the last renewal
        while True:
            deadline = tenure.deadline()
            due = renewal_due(last_attempt, self.timing)
            if deadline is not None:
                due = min(due, deadline)
            await asyncio.sleep(max(0.0, due - self.clock()))
            now = self.clock()
            # A small tolerance: the event loop may wake a timer a little early.
            if tenure.lost(now + 0.01):
                return self._lost(tenure)
            last_attempt = now
            until = now + self.timing.call_limit()
            cut = deadline is not None and deadline < until
            if deadline is not None:
                until = min(until, deadline)
            try:
                result = await self._renew(until)
            except Exception as e:
                if cut and isinstance(e, TimeoutError):
                    continue  # waited until the deadline, not unanswered: given up above
                self._renew_failed(tenure, now, e, logged)
                continue
            if isinstance(result, Taken):
                return result.reason
            if result is None:  # re-read after a 409 and still ours: renew at once
                last_attempt -= self.timing.retry_period
                continue
            if logged:
                log.info("renewed Lease %s again after %.1fs", self.where, now - tenure.renewed_at)
            logged.clear()
            tenure.renewed(now)
            self._took(result, now)

    async def _renew(self, until: float) -> Json | Taken | None:
        """One renewal, every request done by ``until``: the Lease as written, or
        :class:`Taken`, or None when a 409 made it read the Lease again and it is still
        ours. Raises what failed."""
        record = self._record
        assert record is not None, "hold() before acquire()"
        spec = claim_spec(self.identity, record, self.wall(), self.timing)
        body = self._body(self._obj, spec)
        try:
            return await self._call(self.store.replace, body, limit=until - self.clock())
        except LeaseGone:
            # Deleted: whoever creates it first holds it; a 409 means that was not us.
            fresh = self._body(None, spec)
            try:
                return await self._call(self.store.create, fresh, limit=until - self.clock())
            except Conflict:
                return Taken(f"Lease {self.where} was deleted and claimed by another process")
        except Conflict:
            # Someone wrote the Lease: read it; if it is still ours, renew at once.
            obj = await self._call(self.store.get, limit=until - self.clock())
            holder = LeaseRecord.from_object(obj).holder if obj else ""
            if obj is None or holder != self.identity:
                return Taken(f"Lease {self.where} is now held by {holder or 'nobody'}")
            self._obj, self._record = obj, LeaseRecord.from_object(obj)
            return None

    def _renew_failed(
        self, tenure: Tenure, started: float, e: BaseException, logged: set[str]
    ) -> None:
        """Record a failed renewal; log the first of each kind since the last renewal."""
        if unreachable(e):
            tenure.unanswered(started)
            if OUTAGE not in logged:
                logged.add(OUTAGE)
                # segue.controller.kube warns about the outage; this only says what it means
                # for the Lease.
                log.info(
                    "renewing Lease %s: API server unreachable (%s); leading on, since "
                    "nobody can take the Lease while nobody reaches the server",
                    self.where, describe(e),
                )  # fmt: skip
            return
        text = describe(e)
        tenure.answered(text)
        if text not in logged:
            logged.add(text)
            left = (tenure.deadline() or 0.0) - self.clock()
            log.warning(
                "renewing Lease %s failed: %s; giving up in %.1fs unless it succeeds",
                self.where, text, max(0.0, left),
            )  # fmt: skip

    def _lost(self, tenure: Tenure) -> str:
        return (
            f"could not renew Lease {self.where} for {self.timing.renew_deadline:g}s "
            f"(last error: {tenure.refused})"
        )

    async def release(self) -> None:
        """Give the Lease up if it is still ours; best effort, bounded by two request
        limits. A 409 (e.g. a renewal that landed while its answer was lost in an outage)
        makes it read the Lease and try once more if it is still ours."""
        if not self.leading or self._record is None:
            return
        self.leading = False
        self.serving = False
        until = self.clock() + 2 * self.timing.call_limit()
        obj, record = self._obj, self._record
        try:
            for last in (False, True):
                body = self._body(obj, release_spec(record, self.wall()))
                try:
                    await self._call(self.store.replace, body, limit=until - self.clock())
                    break
                except Conflict:
                    if last:
                        raise
                obj = await self._call(self.store.get, limit=until - self.clock())
                if obj is None or LeaseRecord.from_object(obj).holder != self.identity:
                    return  # someone else's by now: nothing to give up
                record = LeaseRecord.from_object(obj)
        except Exception as e:  # a standby then takes over when the Lease expires
            log.warning("could not release Lease %s: %s", self.where, describe(e))
            return
        log.info("released Lease %s", self.where)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class StandbyHealth:
    """Answers the liveness endpoint while the process stands by, so the probe does not
    restart a standby. kopf serves the same endpoint once this process leads."""

    def __init__(self, endpoint: str | None) -> None:
        self.endpoint = endpoint
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        if not self.endpoint:
            return
        parts = urllib.parse.urlsplit(self.endpoint)
        if parts.scheme != "http":
            raise ValueError(f"unsupported liveness endpoint: {self.endpoint}")

        async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
            return aiohttp.web.json_response({"leader": False})

        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.get(parts.path or "/", healthz)])
        runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, parts.hostname or "localhost", parts.port or 80)
        await site.start()
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


class Gate(Protocol):
    """Whether the holder may serve besides holding its Lease (shards: not while processes
    of another shard count serve; segue.controller.shard_gate)."""

    async def opened(self) -> None:
        """Return once the holder may serve; it keeps its Lease meanwhile."""

    async def closed(self) -> str:
        """While the holder serves: return why it must stop."""

    def stopped(self) -> None:
        """The holder no longer serves."""


async def run_elected(
    elector: Elector,
    operate: Callable[[asyncio.Event, asyncio.Event], Coroutine[Any, Any, None]],
    liveness: str | None,
    handle_signals: bool = True,
    exit_hard: Callable[[int], None] = os._exit,
    gate: Gate | None = None,
) -> int:
    """Stand by until this process holds the Lease (and ``gate`` opens), then run
    ``operate(stop, ready)`` (kopf with ``stop_flag`` and ``ready_flag``) while renewing it.

    - SIGTERM/SIGINT while standing by or waiting for the gate: release the Lease if held,
      return 0. While leading, the signal sets the stop flag (kopf's own handlers are
      replaced once it is ready: a signal that kopf caught itself would leave its stop-flag
      waiter behind, and kopf waits 5 s for that); once kopf has stopped, the Lease is
      released and 0 returned.
    - Lease lost (:meth:`Elector.hold` returned; an API server outage is not a loss), or the
      gate closed while serving: one log line, kopf is asked to stop (``operate``'s event),
      and the process exits with status 1 once kopf has stopped, or after ``STOP_GRACE``
      and before :meth:`Elector.stop_by` at the latest (a hard exit, so no thread left
      behind can write after a standby took over).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    health = StandbyHealth(liveness)
    acquiring = asyncio.create_task(elector.acquire(), name="segue leader election")
    ready = asyncio.Event()
    holding: asyncio.Task[str] | None = None
    opening: asyncio.Task[None] | None = None
    closing: asyncio.Task[str] | None = None
    readying: asyncio.Task[bool] | None = None
    running: asyncio.Task[None] | None = None

    def on_signal() -> None:
        stop.set()
        acquiring.cancel()

    async def give_up(reason: str, what: str) -> int:
        log.error("%s: %s; stopping the operator and exiting", what, reason)
        if gate is not None and running is not None:
            gate.stopped()
        remaining = elector.stop_by() - elector.clock()
        grace = max(0.0, min(remaining, STOP_GRACE))
        if running is not None:
            with contextlib.suppress(BaseException):  # not stopped in time: exit all the same
                await asyncio.wait_for(asyncio.shield(running), grace)
        _flush_logs()
        exit_hard(1)
        return 1

    def lost_reason(task: asyncio.Task[str]) -> str:
        try:
            return task.result()
        except Exception as e:  # a bug in renewal: all the same, stop acting
            return f"renewing the Lease failed: {describe(e)}"

    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
    try:
        await health.start()
        try:
            try:
                await acquiring
            except asyncio.CancelledError:
                if not stop.is_set():
                    raise
                log.info("stopping while standing by")
                return 0
            # Created before kopf starts: kopf leaves tasks that predate it alone (it waits
            # for, then cancels, the ones that appeared while it ran), so renewal goes on
            # while kopf shuts down gracefully.
            holding = asyncio.create_task(elector.hold(), name="segue lease renewal")
            holding.add_done_callback(lambda _: stop.set())
            if gate is not None:
                opening = asyncio.create_task(gate.opened(), name="segue shard gate")
                stopping = asyncio.create_task(stop.wait(), name="segue stop while waiting")
                try:
                    await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
                if holding.done():
                    return await give_up(lost_reason(holding), "lost leadership")
                if not opening.done():
                    log.info("stopping while waiting to serve")
                    holding.cancel()
                    await asyncio.gather(holding, return_exceptions=True)
                    await elector.release()
                    return 0
                opening.result()
        finally:
            await health.stop()
        elector.serving = True
        readying = asyncio.create_task(ready.wait(), name="segue operator ready")
        running = asyncio.create_task(operate(stop, ready), name="segue operator")
        waiting: set[asyncio.Task[Any]] = {holding, readying, running}
        if gate is not None:
            closing = asyncio.create_task(gate.closed(), name="segue shard check")
            closing.add_done_callback(lambda _: stop.set())
            waiting.add(closing)
        while True:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if done != {readying}:
                break
            waiting.discard(readying)
            if handle_signals:  # kopf installed its handlers while starting: ours again
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stop.set)
        if holding in done:
            return await give_up(lost_reason(holding), "lost leadership")
        if closing is not None and closing in done:
            try:
                reason = closing.result()
            except Exception as e:
                reason = f"checking the shards failed: {describe(e)}"
            return await give_up(reason, "must stop serving")
        holding.cancel()
        try:
            await running  # kopf stopped by itself (a signal) or failed
        finally:
            if closing is not None:
                closing.cancel()
            if gate is not None:
                gate.stopped()  # kopf has stopped: said before anyone else may serve
            await asyncio.gather(holding, return_exceptions=True)
            await elector.release()
        return 0
    finally:
        if gate is not None and running is not None:
            gate.stopped()
        for task in (acquiring, holding, opening, closing, readying, running):
            if task is not None and not task.done():
                task.cancel()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        elector.close()
