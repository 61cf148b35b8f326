"""Running health-gate rounds for one Rollout: spec to analysis inputs, credentials from
the Secret a MetricProvider (or, with an allowed inline address, the Rollout) names, and
the round's result as an engine observation.

Where queries go: the MetricProvider named in ``spec.analysis.providerRef`` (its address,
timeout and Secret, read in the namespace the MetricProvider names); else an inline
``spec.analysis.prometheus.address`` only when the operator allows it
(``--allow-prometheus-address``; the operator-wide default address always is); else the
default address. A refused address is never queried, so no token goes there.

A round runs as a background task, so a slow or unreachable Prometheus never delays the
handling of an abort or an approval; its completion wakes the Rollout's loop. Its queries
run on the query pool of the Prometheus address (``segue.analysis.pool``), never in a
thread shared with Kubernetes calls, and the round ends by its deadline whatever the
server does. The Secret holding the credentials is read through a short-lived cache, so a
round every few seconds does not mean a Kubernetes GET every few seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from segue.analysis.addresses import AddressPolicy
from segue.analysis.provider import provider_for, provider_kinds
from segue.analysis.round import evaluate_round
from segue.analysis.types import (
    DEFAULT_PROMETHEUS_ADDRESS,
    MAX_TIMEOUT_S,
    PROMETHEUS_ADDRESS_ENV,
    PrometheusSettings,
)
from segue.api.duration import parse_duration
from segue.api.provider import MetricProviderSpec
from segue.api.spec import Analysis, RolloutSpec
from segue.controller.kube import Secrets
from segue.controller.resolution import gate_spec, round_context
from segue.engine import GateRound

log = logging.getLogger(__name__)

# How long a Secret read for Prometheus credentials is used before it is read again.
SECRET_TTL_S: Final = 30.0
# How long a failed read is remembered (a missing Secret is not asked for every round).
SECRET_FAILURE_TTL_S: Final = 5.0
# When a read fails, credentials read successfully at most this long ago are used instead
# (the API server being down should not stop the analysis as well).
SECRET_STALE_S: Final = 300.0
SECRET_CACHE_MAX: Final = 256


_written: set[str] = set()


def _ca_file(pem: str) -> str:
    """Write a CA bundle once per content (the HTTP client wants a path)."""
    digest = hashlib.sha256(pem.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"segue-ca-{digest}.pem"
    if str(path) not in _written:
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(pem)
            tmp.replace(path)
        _written.add(str(path))
    return str(path)


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


class ProviderNotUsable(Exception):
    """The Rollout's provider cannot be used (missing, invalid, address refused); the
    message names the field and is safe to show."""


def provider_missing(name: str) -> str:
    return f"MetricProvider {name} named in spec.analysis.providerRef"


def operator_default_address(configured: str | None) -> str:
    """The operator-wide address: the flag, else the environment, else the built-in one."""
    chosen = configured or os.environ.get(PROMETHEUS_ADDRESS_ENV) or DEFAULT_PROMETHEUS_ADDRESS
    return chosen.rstrip("/")


class GateRunner:
    def __init__(
        self,
        secrets: Secrets,
        default_address: str | None,
        *,
        providers: ProviderLookup = lambda name: None,
        allowed_addresses: Iterable[str] = (),
        secret_ttl_s: float = SECRET_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secrets = CachedSecrets(secrets, ttl_s=secret_ttl_s, clock=clock)
        self._default_address = default_address
        self._providers = providers
        # The default address is always allowed; anything else only when listed.
        self.policy = AddressPolicy.of(
            [*allowed_addresses, operator_default_address(default_address)]
        )
        provider_kinds()  # imports the providers now, not during a round on the event loop

    def refusal(self, spec: RolloutSpec) -> str | None:
        """Why the spec's inline address may not be queried (None: it may, or there is
        none). Checked before every pass, so a refused Rollout never moves traffic."""
        prom = spec.analysis.prometheus if spec.analysis is not None else None
        if prom is None or prom.address is None or self.policy.allows(prom.address):
            return None
        return self.policy.refusal(prom.address)

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

    async def settings(self, namespace: str, analysis: Analysis) -> PrometheusSettings:
        if analysis.provider_ref is not None:
            return await self._provider_settings(analysis.provider_ref.name)
        prom = analysis.prometheus
        if prom is not None and prom.address is not None and not self.policy.allows(prom.address):
            raise ProviderNotUsable(self.policy.refusal(prom.address))
        token: str | None = None
        ca: str | None = None
        if prom is not None and prom.secret_ref is not None:
            ref = prom.secret_ref
            token, ca = await self._credentials(namespace, ref.name, ref.token_key, ref.ca_key)
        timeout = parse_duration(prom.timeout).total_seconds() if prom else 5.0
        return PrometheusSettings.from_env(
            (prom.address if prom else None) or self._default_address,
            bearer_token=token,
            ca_file=ca,
            timeout_s=min(timeout, MAX_TIMEOUT_S),
        )

    async def _provider_settings(self, name: str) -> PrometheusSettings:
        found = self._providers(name)
        if found is None:
            raise ProviderNotUsable(f"{provider_missing(name)} not found")
        if isinstance(found, str):
            raise ProviderNotUsable(f"{provider_missing(name)}: {found}")
        prom = found.prometheus
        token: str | None = None
        ca: str | None = None
        if prom.secret_ref is not None:
            ref = prom.secret_ref
            # The MetricProvider's namespace, never the Rollout's.
            token, ca = await self._credentials(ref.namespace, ref.name, ref.token_key, ref.ca_key)
        return PrometheusSettings(
            address=prom.address.rstrip("/"),
            bearer_token=token,
            ca_file=ca,
            timeout_s=min(parse_duration(prom.timeout).total_seconds(), MAX_TIMEOUT_S),
        )

    async def _credentials(
        self, namespace: str, name: str, token_key: str, ca_key: str
    ) -> tuple[str | None, str | None]:
        data = await self.secrets.read(namespace, name)
        pem = data.get(ca_key)
        return data.get(token_key) or None, _ca_file(pem) if pem else None

    async def run(self, namespace: str, name: str, spec: RolloutSpec, weight: int) -> GateRound:
        analysis = spec.analysis
        assert analysis is not None
        now = datetime.now(UTC)
        try:
            settings = await self.settings(namespace, analysis)
        except ProviderNotUsable as e:
            return GateRound(evaluated_at=now, results=(), error=str(e))
        except Exception as e:  # the Secret is missing or unreadable: no round can run
            return GateRound(evaluated_at=now, results=(), error=f"Prometheus credentials: {e}")
        context = round_context(namespace, name, spec, float(weight))
        try:
            # No I/O: builds a client the first time, then returns the cached provider.
            provider = provider_for(settings)
        except (TypeError, ValueError) as e:
            return GateRound(evaluated_at=now, results=(), error=f"Prometheus: {e}")
        return await evaluate_round([gate_spec(g) for g in analysis.gates], context, provider, now)


class RoundScheduler:
    """At most one round in flight per Rollout, started every ``interval``."""

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
            self._next_at = loop_now + interval_s

    def due_by(self, loop_time: float) -> None:
        """Start the next round no later than ``loop_time`` (a hold that ends then needs a
        round evaluated within its step; the interval alone might bring it seconds late)."""
        self._next_at = min(self._next_at, loop_time)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
