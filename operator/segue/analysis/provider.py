"""The small protocol a metric provider implements, its errors, and the provider registry.

A provider answers one instant query with one number. It is blocking on purpose (the
clients we wrap are), so callers run it in a thread. Adding a provider is one new module
that calls :func:`register_provider` at import, plus its name in ``_BUILTIN_MODULES``.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable


class ProviderError(Exception):
    """A query could not produce a value."""


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or did not answer in time (the query may be fine)."""


class QueryRejected(ProviderError):
    """The provider refused the query itself; retrying will not help.

    ``detail`` is the provider's own explanation, kept verbatim for the user.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnusableResult(QueryRejected):
    """The query ran but its answer is not one number (several series, a range vector...)."""


@runtime_checkable
class MetricProvider(Protocol):
    """Answers instant queries with one number.

    ``query_scalar`` returns ``None`` when there is no data (empty result, NaN, ±Inf), so
    callers can tell "no data" from a real value; it raises :class:`ProviderUnavailable` or
    :class:`QueryRejected` otherwise. It must bound its own duration (a timeout on every
    request): a thread running it cannot be cancelled.
    """

    @property
    def name(self) -> str:
        """Human-readable name used in messages, e.g. "Prometheus"."""
        ...

    def query_scalar(self, query: str) -> float | None: ...


S = TypeVar("S")
ProviderFactory = Callable[[Any], MetricProvider]

_FACTORIES: dict[type[Any], tuple[str, ProviderFactory]] = {}
_BUILTIN_MODULES = ("segue.analysis.prometheus",)
_lock = threading.Lock()
_cache: dict[object, MetricProvider] = {}
_CACHE_MAX = 64


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


def provider_for(settings: object) -> MetricProvider:
    """A shared provider per distinct (hashable) settings, so connection pools are reused
    across rounds instead of being rebuilt every interval."""
    with _lock:
        provider = _cache.get(settings)
        if provider is None:
            if len(_cache) >= _CACHE_MAX:
                # Settings rarely change; dropping the oldest keeps memory bounded anyway.
                _cache.pop(next(iter(_cache)))
            provider = create_provider(settings)
            _cache[settings] = provider
        return provider
