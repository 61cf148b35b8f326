"""The small protocol a metric provider implements, its errors, the provider registry, and
the shared cache of providers, each with its bulkhead.

A provider answers one instant query with one number. It is blocking on purpose (the
clients we wrap are), so its calls run in threads: never asyncio's default executor, but
the :class:`~segue.analysis.pool.QueryPool` of its address, which ``provider_for`` pairs it
with (a :class:`PooledProvider`). Adding a provider is one new module that calls
:func:`register_provider` at import, plus its name in ``_BUILTIN_MODULES``.
"""

from __future__ import annotations

import importlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

from segue.analysis.errors import (
    PoolSaturated,
    ProviderError,
    ProviderUnavailable,
    QueryRejected,
    QueryTimedOut,
    UnusableResult,
)
from segue.analysis.pool import QueryPool
from segue.analysis.types import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S

__all__ = [
    "QUERY_SLACK_S",
    "ROUND_DEADLINE_CAP_S",
    "MetricProvider",
    "PoolSaturated",
    "PooledProvider",
    "ProviderError",
    "ProviderUnavailable",
    "QueryRejected",
    "QueryTimedOut",
    "UnusableResult",
    "close_providers",
    "create_provider",
    "provider_for",
    "provider_kinds",
    "register_provider",
]

# A query's hard deadline is its provider's timeout plus this: the client's own timeout
# normally ends it first, the deadline only catches what that misses (a stuck DNS lookup,
# an answer trickling in byte by byte).
QUERY_SLACK_S: Final = 1.0
# A round's deadline is twice the timeout (plus the slack), and never more than this.
ROUND_DEADLINE_CAP_S: Final = 60.0


@runtime_checkable
class MetricProvider(Protocol):
    """Answers instant queries with one number.

    ``query_scalar`` returns ``None`` when there is no data (empty result, NaN, ±Inf), so
    callers can tell "no data" from a real value; it raises :class:`ProviderUnavailable` or
    :class:`QueryRejected` otherwise. It must bound its own duration (a timeout on every
    request): a thread running it cannot be cancelled, and holds a worker of its pool.
    """

    @property
    def name(self) -> str:
        """Human-readable name used in messages, e.g. "Prometheus"."""
        ...

    def query_scalar(self, query: str) -> float | None: ...


@dataclass(frozen=True, eq=False)
class PooledProvider:
    """A provider with its bulkhead: the pool its queries run in, and their deadlines."""

    provider: MetricProvider
    pool: QueryPool
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def standalone(
        cls, provider: MetricProvider, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> PooledProvider:
        """``provider`` with a pool of its own, outside the cache; the caller shuts the pool
        down (``pool.shutdown()``) when done."""
        return cls(provider, QueryPool(provider.name), min(timeout_s, MAX_TIMEOUT_S))

    @property
    def name(self) -> str:
        return self.provider.name

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
        """``query_scalar`` on this provider's pool, within ``query_deadline_s``."""
        return await self.pool.run(
            self.provider.query_scalar, query, deadline_s=self.query_deadline_s
        )


S = TypeVar("S")
ProviderFactory = Callable[[Any], MetricProvider]

_FACTORIES: dict[type[Any], tuple[str, ProviderFactory]] = {}
_BUILTIN_MODULES = ("segue.analysis.prometheus",)
_CACHE_MAX: Final = 64


@dataclass
class _SharedPool:
    pool: QueryPool
    users: int = 0


_lock = threading.Lock()
# Least recently used first.
_cache: OrderedDict[object, PooledProvider] = OrderedDict()
# One pool per address, shared by the cached providers of that address (which differ in
# credentials or timeout), so a hanging server holds at most one pool's workers.
_pools: dict[object, _SharedPool] = {}


def register_provider(
    name: str, settings_type: type[S], factory: Callable[[S], MetricProvider]
) -> None:
    """Make ``create_provider(settings_type(...))`` build providers with ``factory``."""
    _FACTORIES[settings_type] = (name, factory)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def provider_kinds() -> dict[str, type[Any]]:
    """Registered provider names and the settings type each one takes."""
    _load_builtins()
    return {name: settings_type for settings_type, (name, _) in _FACTORIES.items()}


def create_provider(settings: object) -> MetricProvider:
    """A new provider for these settings (dispatching on the settings' type)."""
    _load_builtins()
    entry = _FACTORIES.get(type(settings))
    if entry is None:
        known = ", ".join(sorted(t.__name__ for t in _FACTORIES))
        raise TypeError(f"no metric provider for {type(settings).__name__}; known: {known}")
    return entry[1](settings)


def provider_for(settings: object) -> PooledProvider:
    """A shared provider per distinct (hashable) settings, with the query pool of its
    address, so clients and threads are reused across rounds instead of being rebuilt every
    interval.

    Does no I/O (building a provider only builds its client), so it may be called on the
    event loop. At most 64 settings are kept, least recently used evicted first; evicting
    the last provider of an address shuts its pool down without waiting.
    """
    with _lock:
        cached = _cache.get(settings)
        if cached is not None and not cached.pool.closed:
            _cache.move_to_end(settings)
            return cached
        if cached is not None:
            _evict(settings)
        provider = create_provider(settings)
        address = getattr(settings, "address", None)
        key: object = (type(settings), address) if isinstance(address, str) else settings
        shared = _pools.get(key)
        if shared is None:
            label = f"{provider.name} at {address}" if isinstance(address, str) else provider.name
            shared = _pools[key] = _SharedPool(QueryPool(label))
        shared.users += 1
        timeout = getattr(settings, "timeout_s", DEFAULT_TIMEOUT_S)
        pooled = PooledProvider(provider, shared.pool, min(float(timeout), MAX_TIMEOUT_S))
        _cache[settings] = pooled
        while len(_cache) > _CACHE_MAX:
            _evict(next(iter(_cache)))
        return pooled


def close_providers() -> None:
    """Evict every cached provider and shut their pools down (at shutdown, in tests)."""
    with _lock:
        while _cache:
            _evict(next(iter(_cache)))


def _evict(settings: object) -> None:
    """Drop one cached provider (``_lock`` held); close its clients, and its pool when no
    other cached provider shares it."""
    pooled = _cache.pop(settings)
    close = getattr(pooled.provider, "close", None)
    if callable(close):
        close()
    for key, shared in list(_pools.items()):
        if shared.pool is pooled.pool:
            shared.users -= 1
            if shared.users <= 0:
                del _pools[key]
                shared.pool.shutdown()
            break
