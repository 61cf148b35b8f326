"""One webhook delivery: POST a JSON body, retrying what may succeed later; and the HTTP
session deliveries share.

Retried: connection errors, timeouts, 5xx and 429 (honouring a short Retry-After). Not
retried: any other status, since asking again will not fix a 400, 401 or 404 (redirects
included: they are not followed).

Deliveries are async HTTP on the operator's event loop (aiohttp), so they hold no thread.
The one blocking step, the DNS lookup, runs on two threads of the session's own
(:class:`PoolResolver`), never in asyncio's default executor, which would otherwise be
shared with anything else in the process. The session ignores proxy settings and
``.netrc`` from the environment: the destinations come from Secrets, and a request to
them goes straight there, or through the one proxy the operator was started with.

Destinations the operator's rules refuse (:mod:`segue.notify.destinations`) are never
connected to: a URL whose host is written as a refused address or is an internal name is
refused before any attempt, and the resolver drops every refused address it looks up, so
what the session connects to is exactly what was checked. A refusal is not retried.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from segue.notify.destinations import Destinations, Refusal, RefusedDestination
from segue.notify.types import WebhookTarget

log = logging.getLogger("segue.notify")

USER_AGENT: Final = "segue-notify/1"
DNS_WORKERS: Final = 2
# A lookup that takes longer fails the attempt (the request's own timeout bounds it too).
DNS_TIMEOUT_S: Final = 5.0
# Lookups submitted and not finished (a stuck one included) beyond which new ones fail
# at once instead of queueing behind them.
DNS_MAX_IN_FLIGHT: Final = 16
# Simultaneous connections of the session, over all receivers.
CONNECTION_LIMIT: Final = 100


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` after the first attempt, waiting ``backoff`` seconds, doubling each time
    (0.5, 1, 2 by default). ``timeout``: seconds for one whole attempt."""

    timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return float(min(self.backoff * 2.0 ** (retry - 1), self.max_backoff))


DEFAULT_POLICY: Final = RetryPolicy()

Outcome = Literal["delivered", "rejected", "failed", "refused"]


@dataclass(frozen=True)
class DeliveryResult:
    """``rejected``: a status not worth retrying; ``failed``: retries ran out;
    ``refused``: the destination is one the operator does not send to (``refusal`` says
    why; nothing was sent)."""

    outcome: Outcome
    attempts: int
    status: int | None = None
    error: str | None = None
    refusal: Refusal | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "delivered"


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after(headers: Any) -> float | None:
    # Only the delta-seconds form: an HTTP date is rare for webhooks and not worth a parser.
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return None


class PoolResolver(AbstractResolver):
    """DNS lookups (``lookup``: ``socket.getaddrinfo``) on a small thread pool of their own,
    each bounded by ``timeout`` seconds; when ``max_in_flight`` lookups are already running
    or waiting, a new one fails at once.

    Only addresses that ``destinations`` allows come back: the session connects to nothing
    else. A name whose every address is refused fails with :class:`RefusedDestination`.
    Names in ``exempt`` (the operator's own proxy) are not judged."""

    def __init__(
        self,
        *,
        workers: int = DNS_WORKERS,
        timeout: float = DNS_TIMEOUT_S,
        max_in_flight: int = DNS_MAX_IN_FLIGHT,
        lookup: Callable[..., Any] = socket.getaddrinfo,
        destinations: Destinations | None = None,
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        self.destinations = destinations if destinations is not None else Destinations()
        self.exempt = frozenset(h.lower() for h in exempt)
        self.timeout = timeout
        self._lookup = lookup
        self.max_in_flight = max_in_flight
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="segue-notify-dns"
        )
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                raise OSError(f"DNS lookup of {host} refused: {self._in_flight} still pending")
            self._in_flight += 1

        def finished(_: Future[Any]) -> None:
            with self._lock:
                self._in_flight -= 1

        try:
            future = self._executor.submit(
                self._lookup,
                host,
                port,
                family,
                socket.SOCK_STREAM,
                0,
                socket.AI_ADDRCONFIG,
            )
        except RuntimeError as e:  # closed
            with self._lock:
                self._in_flight -= 1
            raise OSError(f"DNS lookup of {host} refused: resolver closed") from e
        future.add_done_callback(finished)
        try:
            async with asyncio.timeout(self.timeout):
                infos = await asyncio.wrap_future(future)
        except TimeoutError:
            raise OSError(f"DNS lookup of {host} took over {self.timeout:g}s") from None
        hosts: list[ResolveResult] = []
        refused: Refusal | None = None
        judged = host.rstrip(".").lower() not in self.exempt
        for fam, _, proto, _, address in infos:
            if fam == socket.AF_INET6 and (len(address) < 4 or address[3]):
                # No IPv6 support, or a link-local address that needs a scope name.
                continue
            if fam not in (socket.AF_INET, socket.AF_INET6):
                continue
            refusal = self.destinations.check_address(host, str(address[0])) if judged else None
            if refusal is not None:
                refused = refused or refusal
                continue
            hosts.append(
                ResolveResult(
                    hostname=host,
                    host=str(address[0]),
                    port=int(address[1]),
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not hosts and refused is not None:
            raise RefusedDestination(refused)
        if not hosts:
            raise OSError(f"DNS lookup of {host} found no usable address")
        if refused is not None:
            log.info("webhook host %s: left out %s", host, refused.reason)
        return hosts

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def open_session(resolver: AbstractResolver, proxy: str | None = None) -> aiohttp.ClientSession:
    """The HTTP session for deliveries: DNS through ``resolver`` (a :class:`PoolResolver`;
    the caller closes it after the session, aiohttp does not), no proxy or netrc from the
    environment (``proxy``, when given, is the one every request goes through), no
    response decompression (only the first bytes of an error are read). Call on the event
    loop; close it when done."""
    connector = aiohttp.TCPConnector(resolver=resolver, limit=CONNECTION_LIMIT, ttl_dns_cache=60)
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, auto_decompress=False, proxy=proxy
    )


async def post(
    session: aiohttp.ClientSession,
    target: WebhookTarget,
    body: dict[str, Any],
    policy: RetryPolicy = DEFAULT_POLICY,
    destinations: Destinations | None = None,
) -> DeliveryResult:
    """POST ``body`` as JSON to ``target``, with ``policy``'s timeout and retries, unless
    ``destinations`` refuse its host (the session's resolver judges the addresses)."""
    refusal = (destinations or Destinations()).check_host(target.host)
    if refusal is not None:
        return DeliveryResult("refused", 0, error=refusal.reason, refusal=refusal)
    timeout = aiohttp.ClientTimeout(total=policy.timeout)
    status: int | None = None
    error: str | None = None
    attempt = 0
    while True:
        attempt += 1
        wait: float | None = None
        try:
            async with session.post(
                target.url,
                json=body,
                timeout=timeout,
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                # A redirect is not followed: the body would go somewhere not configured.
                allow_redirects=False,
            ) as resp:
                status, error = resp.status, None
                if 200 <= resp.status < 300:
                    return DeliveryResult("delivered", attempt, status)
                # A little of the body says why; reading all of it could be large.
                head = await resp.content.read(200)
                error = head.decode("utf-8", "replace").strip() or resp.reason or ""
                if not _retryable(resp.status):
                    return DeliveryResult("rejected", attempt, status, error)
                wait = _retry_after(resp.headers) if resp.status == 429 else None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedDestination):
                refusal = exc.os_error.refusal
                return DeliveryResult("refused", attempt, error=refusal.reason, refusal=refusal)
            status, error = None, type(exc).__name__
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The exception text can carry the URL, which can carry a token: log the type.
            status, error = None, type(exc).__name__
        if attempt > policy.retries:
            return DeliveryResult("failed", attempt, status, error)
        delay = policy.delay(attempt)
        if wait is not None:
            delay = min(max(delay, wait), policy.max_backoff)
        log.debug(
            "webhook %s: attempt %d got %s; retrying in %.2fs",
            target.redacted,
            attempt,
            status or error,
            delay,
        )
        await asyncio.sleep(delay)
