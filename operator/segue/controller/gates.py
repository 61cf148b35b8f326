"""Running health-gate rounds for one Rollout with the metric provider it uses, and the
round's result as an engine observation.

Which provider: the MetricProvider named in ``spec.analysis.providerRef``, else the one
whose section ``spec.analysis`` sets, else the catalog's default provider
(``segue.analysis.providers``). Nothing here names a provider: the registry gives each
one's runtime, which says whether a Rollout's own section may be used (an inline address
the operator does not allow is refused, and never queried) and where the queries go.

A round runs as a background task, so a slow or unreachable provider never delays the
handling of an abort or an approval; its completion wakes the Rollout's loop. Its queries
run on the query pool of the provider's address (``segue.analysis.pool``), never in a
thread shared with Kubernetes calls, and the round ends by its deadline whatever the
server does. Secrets holding credentials are read through a short-lived cache, so a round
every few seconds does not mean a Kubernetes GET every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from segue.analysis.providers import catalog, registry
from segue.analysis.providers.base import Provider
from segue.analysis.providers.runtime import Connection, ProviderNotUsable, ProviderRuntime
from segue.api.base import SpecModel
from segue.api.provider import MetricProviderSpec
from segue.api.spec import Analysis, RolloutSpec
from segue.controller.kube import Secrets
from segue.controller.resolution import round_context
from segue.engine import GateRound

log = logging.getLogger(__name__)

# How long a Secret read for provider credentials is used before it is read again.
SECRET_TTL_S: Final = 30.0
# How long a failed read is remembered (a missing Secret is not asked for every round).
SECRET_FAILURE_TTL_S: Final = 5.0
# When a read fails, credentials read successfully at most this long ago are used instead
# (the API server being down should not stop the analysis as well).
SECRET_STALE_S: Final = 300.0
SECRET_CACHE_MAX: Final = 256


class SecretUnreadable(Exception):
    """A Secret could not be read; the message is short and has no Secret data in it."""


@dataclass(frozen=True)
class _Entry:
    expires_at: float
    data: Mapping[str, str] | None
    read_at: float  # of ``data``
    error: str | None = None


class CachedSecrets:
    """Reads Secrets through ``secrets`` and keeps each one for ``ttl_s`` seconds.

    A failed read is remembered for ``failure_ttl_s``; when it fails, data read at most
    ``stale_s`` ago is returned instead. At most ``max_entries`` Secrets are kept.
    """

    def __init__(
        self,
        secrets: Secrets,
        *,
        ttl_s: float = SECRET_TTL_S,
        failure_ttl_s: float = SECRET_FAILURE_TTL_S,
        stale_s: float = SECRET_STALE_S,
        max_entries: int = SECRET_CACHE_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = secrets
        self.ttl_s = ttl_s
        self.failure_ttl_s = failure_ttl_s
        self.stale_s = stale_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    async def read(self, namespace: str, name: str) -> Mapping[str, str]:
        key = (namespace, name)
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and now < cached.expires_at:
            if cached.data is not None:
                return cached.data
            raise SecretUnreadable(cached.error)
        try:
            data = dict(await self._secrets.read(namespace, name))
        except Exception as e:
            error = _describe(namespace, name, e)
            recent = cached is not None and now - cached.read_at <= self.stale_s
            if cached is not None and cached.data is not None and recent:
                log.debug("%s; using what was read %.0fs ago", error, now - cached.read_at)
                self._put(key, _Entry(now + self.failure_ttl_s, cached.data, cached.read_at))
                return cached.data
            self._put(key, _Entry(now + self.failure_ttl_s, None, now, error))
            raise SecretUnreadable(error) from e
        self._put(key, _Entry(now + self.ttl_s, data, now))
        return data

    def forget(self, namespace: str, name: str) -> None:
        self._entries.pop((namespace, name), None)

    def _put(self, key: tuple[str, str], entry: _Entry) -> None:
        self._entries.pop(key, None)
        self._entries[key] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def _describe(namespace: str, name: str, e: Exception) -> str:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", None)
    if isinstance(status, int):  # the Kubernetes client's ApiException: its text is long
        return f"cannot read Secret {namespace}/{name}: HTTP {status} {reason or ''}".rstrip()
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"cannot read Secret {namespace}/{name}: {text[:200]}"


ProviderLookup = Callable[[str], MetricProviderSpec | str | None]


def provider_missing(name: str) -> str:
    return f"MetricProvider {name} named in spec.analysis.providerRef"


class GateRunner:
    """Runs a Rollout's rounds with the metric provider it uses: the MetricProvider named
    in ``spec.analysis.providerRef`` (``metric_providers`` looks it up), else the one whose
    section ``spec.analysis`` sets, else the catalog's default provider. ``runtimes``: the
    providers' running halves, configured with the operator's flags (any not given run with
    their defaults)."""

    def __init__(
        self,
        secrets: Secrets,
        runtimes: Iterable[ProviderRuntime] = (),
        *,
        metric_providers: ProviderLookup = lambda name: None,
        secret_ttl_s: float = SECRET_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secrets = CachedSecrets(secrets, ttl_s=secret_ttl_s, clock=clock)
        self._providers = metric_providers
        # Loads every provider's runtime now, not during a round on the event loop.
        self.runtimes = registry.runtimes(runtimes)

    def refusal(self, spec: RolloutSpec) -> str | None:
        """Why the spec's own provider section may not be used (None: it may, or there is
        none). Checked before every pass, so a refused Rollout never moves traffic."""
        inline = catalog.inline_section(spec.analysis) if spec.analysis is not None else None
        if inline is None:
            return None
        provider, section = inline
        return self.runtimes[provider.key].refusal(section)

    def provider_problem(self, spec: RolloutSpec) -> str | None:
        """What is wrong with the MetricProvider the spec names (None: nothing, or none)."""
        ref = spec.analysis.provider_ref if spec.analysis is not None else None
        if ref is None:
            return None
        found = self._providers(ref.name)
        if found is None:
            return f"{provider_missing(ref.name)} (not found)"
        if isinstance(found, str):
            return f"{provider_missing(ref.name)} ({found})"
        return None

    def provider(self, spec: RolloutSpec) -> Provider:
        """The provider that runs, and so plans, the spec's gates: the named MetricProvider's
        when it is known, else the one whose section the spec sets, else the default."""
        analysis = spec.analysis
        ref = analysis.provider_ref if analysis is not None else None
        found = self._providers(ref.name) if ref is not None else None
        if isinstance(found, MetricProviderSpec):
            return catalog.endpoint_section(found)[0]
        return catalog.provider_of(analysis)

    def _source(self, analysis: Analysis) -> tuple[ProviderRuntime, SpecModel | None]:
        """The runtime and the section (None: the operator's defaults) a round uses."""
        if analysis.provider_ref is not None:
            name = analysis.provider_ref.name
            found = self._providers(name)
            if found is None:
                raise ProviderNotUsable(f"{provider_missing(name)} not found")
            if isinstance(found, str):
                raise ProviderNotUsable(f"{provider_missing(name)}: {found}")
            provider, section = catalog.endpoint_section(found)
            return self.runtimes[provider.key], section
        inline = catalog.inline_section(analysis)
        if inline is None:
            return self.runtimes[catalog.DEFAULT.key], None
        return self.runtimes[inline[0].key], inline[1]

    async def connect(self, namespace: str, analysis: Analysis) -> Connection:
        """Where this Rollout's queries go, with the credentials its provider names."""
        runtime, section = self._source(analysis)
        return await runtime.connect(section, namespace, self.secrets)

    async def run(self, namespace: str, name: str, spec: RolloutSpec, weight: int) -> GateRound:
        analysis = spec.analysis
        assert analysis is not None
        now = datetime.now(UTC)
        try:
            runtime, section = self._source(analysis)
        except ProviderNotUsable as e:
            return GateRound(evaluated_at=now, results=(), error=str(e))
        try:
            connection = await runtime.connect(section, namespace, self.secrets)
        except ProviderNotUsable as e:
            return GateRound(evaluated_at=now, results=(), error=str(e))
        except Exception as e:  # the Secret is missing or unreadable: no round can run
            title = runtime.provider.title
            return GateRound(evaluated_at=now, results=(), error=f"{title} credentials: {e}")
        context = round_context(namespace, name, spec, float(weight))
        return await connection.evaluate(analysis.gates, context, now)


def next_tick(loop_now: float, interval_s: float) -> float:
    """When the round after one started at ``loop_now`` is due: the first point of the
    interval's grid of loop time at least half an interval away. Rounds of Rollouts with
    the same interval so start together and share batched queries
    (``segue.analysis.batcher``); after the first, rounds are one interval apart."""
    if interval_s <= 0:
        return loop_now
    return math.ceil((loop_now + interval_s / 2) / interval_s) * interval_s


class RoundScheduler:
    """At most one round in flight per Rollout, started every ``interval`` on the
    interval's grid (:func:`next_tick`)."""

    def __init__(self) -> None:
        self.latest: GateRound | None = None
        self._task: asyncio.Task[GateRound] | None = None
        self._next_at = 0.0  # loop time of the next round

    def collect(self) -> None:
        task = self._task
        if task is not None and task.done():
            self._task = None
            try:
                self.latest = task.result()
            except Exception as e:  # never let a round's bug stop the Rollout's loop
                log.exception("analysis round failed")
                self.latest = GateRound(
                    evaluated_at=datetime.now(UTC), results=(), error=f"analysis failed: {e}"
                )

    def due_in(self, loop_now: float) -> float:
        return max(0.0, self._next_at - loop_now)

    def maybe_start(
        self,
        loop_now: float,
        interval_s: float,
        start: Callable[[], asyncio.Task[GateRound]],
    ) -> None:
        if self._task is None and loop_now >= self._next_at:
            self._task = start()
            self._next_at = next_tick(loop_now, interval_s)

    def due_by(self, loop_time: float) -> None:
        """Start the next round no later than ``loop_time`` (a hold that ends then needs a
        round evaluated within its step; the interval alone might bring it seconds late)."""
        self._next_at = min(self._next_at, loop_time)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
