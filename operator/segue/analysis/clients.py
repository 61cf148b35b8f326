"""The query clients of metric providers, and the shared cache of clients, each with its
bulkhead.

A client answers one instant query with one number. It is blocking on purpose (the
clients we wrap are), so its calls run in threads: never asyncio's default executor, but
the :class:`~segue.analysis.pool.QueryPool` of its address, which :func:`client_for` pairs
it with (a :class:`PooledClient`). Which client a Rollout's provider needs is the
provider's business (``segue.analysis.providers``); this module only keeps them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar, runtime_checkable

from segue.analysis.batches import Series
from segue.analysis.pool import QueryPool

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_TIMEOUT_S",
    "QUERY_SLACK_S",
    "ROUND_DEADLINE_CAP_S",
    "PooledClient",
    "QueryClient",
    "Series",
    "VectorClient",
    "client_for",
    "close_clients",
]

DEFAULT_TIMEOUT_S: Final = 5.0
# The API refuses a longer timeout too; this cap holds for any caller (a hanging server
# must not hold a query worker for minutes).
MAX_TIMEOUT_S: Final = 30.0
# A query's hard deadline is its client's timeout plus this: the client's own timeout
# normally ends it first, the deadline only catches what that misses (a stuck DNS lookup,
# an answer trickling in byte by byte).
QUERY_SLACK_S: Final = 1.0
# A round's deadline is twice the timeout (plus the slack), and never more than this.
ROUND_DEADLINE_CAP_S: Final = 60.0


@runtime_checkable
class QueryClient(Protocol):
    """Answers instant queries with one number.

    ``query_scalar`` returns ``None`` when there is no data (empty result, NaN, ±Inf), so
    callers can tell "no data" from a real value; it raises
    :class:`~segue.analysis.errors.ProviderUnavailable` or
    :class:`~segue.analysis.errors.QueryRejected` otherwise. It must bound its own duration
    (a timeout on every request): a thread running it cannot be cancelled, and holds a
    worker of its pool.
    """

    @property
    def name(self) -> str:
        """Human-readable name of the provider, used in messages, e.g. "Prometheus"."""
        ...

    def query_scalar(self, query: str) -> float | None: ...


@runtime_checkable
class VectorClient(QueryClient, Protocol):
    """A client that can also answer a query with several series, labels included: what a
    batched query (``segue.analysis.batcher``) needs. Same errors and time bound as
    ``query_scalar``."""

    def query_vector(self, query: str) -> list[Series]: ...


@dataclass(frozen=True, eq=False)
class PooledClient:
    """A client with its bulkhead: the pool its queries run in, and their deadlines."""

    client: QueryClient
    pool: QueryPool
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def standalone(cls, client: QueryClient, timeout_s: float = DEFAULT_TIMEOUT_S) -> PooledClient:
        """``client`` with a pool of its own, outside the cache; the caller shuts the pool
        down (``pool.shutdown()``) when done."""
        return cls(client, QueryPool(client.name), min(timeout_s, MAX_TIMEOUT_S))

    @property
    def name(self) -> str:
        return self.client.name

    @property
    def label(self) -> str:
        """The provider and where it is, e.g. "Prometheus at http://prom:9090"."""
        return self.pool.label

    @property
    def query_deadline_s(self) -> float:
        """How long a query may run on a worker before the round gives up on it."""
        return self.timeout_s + QUERY_SLACK_S

    @property
    def round_deadline_s(self) -> float:
        """How long a whole round may take, waiting for free workers included."""
        return min(2 * self.timeout_s + QUERY_SLACK_S, ROUND_DEADLINE_CAP_S)

    async def query(self, query: str) -> float | None:
        """``query_scalar`` on this client's pool, within ``query_deadline_s``."""
        return await self.pool.run(
            self.client.query_scalar, query, deadline_s=self.query_deadline_s
        )

    @property
    def batches(self) -> bool:
        """Whether this client can run batched (vector) queries."""
        return isinstance(self.client, VectorClient)

    async def query_vector(self, query: str) -> list[Series]:
        """``query_vector`` on this client's pool, within ``query_deadline_s``."""
        client = self.client
        if not isinstance(client, VectorClient):
            raise TypeError(f"{self.name} cannot answer vector queries")
        return await self.pool.run(client.query_vector, query, deadline_s=self.query_deadline_s)


S = TypeVar("S", bound=Hashable)

_CACHE_MAX: Final = 64


@dataclass
class _SharedPool:
    pool: QueryPool
    users: int = 0


_lock = threading.Lock()
# Least recently used first.
_cache: OrderedDict[object, PooledClient] = OrderedDict()
# One pool per address, shared by the cached clients of that address (which differ in
# credentials or timeout), so a hanging server holds at most one pool's workers.
_pools: dict[object, _SharedPool] = {}


def client_for(
    settings: S,
    factory: Callable[[S], QueryClient],
    *,
    address: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> PooledClient:
    """A shared client per distinct (hashable) settings, built by ``factory``, with the
    query pool of its ``address``, so clients and threads are reused across rounds instead
    of being rebuilt every interval.

    Does no I/O (building a client only builds its session), so it may be called on the
    event loop. At most 64 settings are kept, least recently used evicted first; evicting
    the last client of an address shuts its pool down without waiting.
    """
    with _lock:
        cached = _cache.get(settings)
        if cached is not None and not cached.pool.closed:
            _cache.move_to_end(settings)
            return cached
        if cached is not None:
            _evict(settings)
        client = factory(settings)
        key = (type(settings), address)
        shared = _pools.get(key)
        if shared is None:
            shared = _pools[key] = _SharedPool(QueryPool(f"{client.name} at {address}"))
        shared.users += 1
        pooled = PooledClient(client, shared.pool, min(float(timeout_s), MAX_TIMEOUT_S))
        _cache[settings] = pooled
        while len(_cache) > _CACHE_MAX:
            _evict(next(iter(_cache)))
        return pooled


def close_clients() -> None:
    """Evict every cached client and shut their pools down (at shutdown, in tests)."""
    with _lock:
        while _cache:
            _evict(next(iter(_cache)))


def _evict(settings: object) -> None:
    """Drop one cached client (``_lock`` held); close it, and its pool when no other cached
    client shares it."""
    pooled = _cache.pop(settings)
    close = getattr(pooled.client, "close", None)
    if callable(close):
        close()
    for key, shared in list(_pools.items()):
        if shared.pool is pooled.pool:
            shared.users -= 1
            if shared.users <= 0:
                del _pools[key]
                shared.pool.shutdown()
            break
