"""Prometheus in the operator: its flags, where a round's queries go, and the round.

Where queries go: a MetricProvider's ``spec.prometheus`` (its address, timeout and Secret,
read in the namespace the MetricProvider names); else a Rollout's inline
``spec.analysis.prometheus.address``, only when the operator allows it
(``--allow-prometheus-address``; the operator-wide default address always is); else the
default address (``--prometheus-address``). A refused address is never queried, so no token
goes there.

A round's queries run on the query pool of the Prometheus address
(``segue.analysis.clients``), never in a thread shared with Kubernetes calls, and the round
ends by its deadline whatever the server does. Template gates share batched queries with the
rounds of other Rollouts on the same connection and interval (``segue.analysis.batcher``,
``batching``); custom queries run alone.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from segue.analysis.batcher import BATCHER, Batcher
from segue.analysis.clients import (
    DEFAULT_TIMEOUT_S,
    MAX_TIMEOUT_S,
    PooledClient,
    QueryClient,
    client_for,
)
from segue.analysis.judge import error_status
from segue.analysis.providers.base import Provider, RoundContext
from segue.analysis.providers.prometheus.addresses import AddressPolicy
from segue.analysis.providers.prometheus.client import (
    DEFAULT_ADDRESS,
    PrometheusClient,
    PrometheusSettings,
)
from segue.analysis.providers.prometheus.credentials import read_credentials
from segue.analysis.providers.prometheus.planning import GateMisconfigured, PlanCache, plan_gate
from segue.analysis.providers.prometheus.provider import PROMETHEUS
from segue.analysis.providers.prometheus.settings import Prometheus, PrometheusEndpoint
from segue.analysis.providers.runtime import Connection, ProviderNotUsable, SecretReader
from segue.analysis.round import Batching, Planned, run_round
from segue.api.base import SpecModel
from segue.api.duration import parse_duration
from segue.api.spec import Gate
from segue.api.status import GateStatus
from segue.engine.types import GateRound

ADDRESS_ENV: Final = "SEGUE_PROMETHEUS_ADDRESS"
ALLOWED_ENV: Final = "SEGUE_ALLOW_PROMETHEUS_ADDRESSES"
# The operator's rounds plan each gate once per spec generation.
PLANS: Final = PlanCache()


def operator_default_address(configured: str | None) -> str:
    """The operator-wide address: the flag, else the environment, else the built-in one."""
    chosen = configured or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    return chosen.rstrip("/")


async def evaluate_round(
    gates: Sequence[Gate],
    context: RoundContext,
    client: PooledClient | QueryClient,
    now: datetime,
    *,
    deadline_s: float | None = None,
    batcher: Batcher | None = None,
    plans: PlanCache | None = None,
) -> GateRound:
    """Every gate planned into PromQL for both versions and run on ``client``; a gate that
    cannot be planned gets an ``Error`` status of its own. With ``batcher``, template gates
    share batched queries with other Rollouts' rounds on the same client and interval; with
    ``plans``, a gate planned before for the same Rollout is not planned again. See
    :func:`segue.analysis.round.run_round` for the round's deadline and errors."""
    items: list[GateStatus | Planned] = []
    for gate in gates:
        try:
            items.append(plan_gate(gate, context) if plans is None else plans.plan(gate, context))
        except GateMisconfigured as e:
            items.append(error_status(e.gate, e.message, at=now))
    batching = None
    if batcher is not None:
        interval_s = parse_duration(context.interval).total_seconds()
        batching = Batching(batcher, interval_s)
    return await run_round(
        items, client, now, weight=context.weight, deadline_s=deadline_s, batching=batching
    )


@dataclass(frozen=True)
class PrometheusConnection:
    """One Prometheus endpoint with the credentials a Rollout may use there."""

    settings: PrometheusSettings

    async def evaluate(
        self, gates: Sequence[Gate], context: RoundContext, now: datetime
    ) -> GateRound:
        try:
            # No I/O: builds a client the first time, then returns the cached one.
            client = client_for_settings(self.settings)
        except (TypeError, ValueError) as e:
            return GateRound(evaluated_at=now, results=(), error=f"Prometheus: {e}")
        return await evaluate_round(gates, context, client, now, batcher=BATCHER, plans=PLANS)


def client_for_settings(settings: PrometheusSettings) -> PooledClient:
    """The shared client of these settings, on the query pool of their address."""
    return client_for(
        settings, PrometheusClient, address=settings.address, timeout_s=settings.timeout_s
    )


class PrometheusRuntime:
    """Prometheus with the operator's default address and the inline addresses it allows."""

    def __init__(self, default_address: str | None = None, allowed: Iterable[str] = ()) -> None:
        self.default_address = default_address
        self.allowed = tuple(allowed)
        # The default address is always allowed; anything else only when listed.
        self.policy = AddressPolicy.of([*self.allowed, operator_default_address(default_address)])

    @property
    def provider(self) -> Provider:
        return PROMETHEUS

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--prometheus-address",
            default=os.environ.get(ADDRESS_ENV),
            help=f"Prometheus for Rollouts that name none (env {ADDRESS_ENV})",
        )
        parser.add_argument(
            "--allow-prometheus-address",
            action="append",
            default=_split(os.environ.get(ALLOWED_ENV, "")),
            metavar="URL",
            help="an address a Rollout may name in spec.analysis.prometheus.address "
            f"(repeatable; env {ALLOWED_ENV}, comma-separated); the --prometheus-address is "
            "always allowed, any other inline address is refused: Rollouts use a "
            "MetricProvider",
        )

    def configured(self, args: argparse.Namespace) -> PrometheusRuntime:
        return PrometheusRuntime(args.prometheus_address, args.allow_prometheus_address)

    def describe(self) -> list[str]:
        if not self.allowed:
            return []
        return [f"Rollouts may name these Prometheus addresses: {', '.join(self.allowed)}"]

    def refusal(self, section: SpecModel) -> str | None:
        if not isinstance(section, Prometheus) or section.address is None:
            return None
        if self.policy.allows(section.address):
            return None
        return self.policy.refusal(section.address)

    async def connect(
        self, section: SpecModel | None, namespace: str, secrets: SecretReader
    ) -> Connection:
        return PrometheusConnection(await self.settings(section, namespace, secrets))

    async def settings(
        self, section: SpecModel | None, namespace: str, secrets: SecretReader
    ) -> PrometheusSettings:
        """The address, credentials and timeout a section stands for."""
        token: str | None = None
        ca: str | None = None
        if isinstance(section, PrometheusEndpoint):
            shared = section.secret_ref
            if shared is not None:
                # The MetricProvider's namespace, never the Rollout's.
                token, ca = await read_credentials(
                    secrets, shared.namespace, shared.name, shared.token_key, shared.ca_key
                )
            return PrometheusSettings(
                address=section.address.rstrip("/"),
                bearer_token=token,
                ca_file=ca,
                timeout_s=_seconds(section.timeout),
            )
        if section is not None and not isinstance(section, Prometheus):
            raise TypeError(f"not a Prometheus section: {type(section).__name__}")
        refused = self.refusal(section) if section is not None else None
        if refused is not None:
            raise ProviderNotUsable(refused)
        own = section.secret_ref if section is not None else None
        if own is not None:
            token, ca = await read_credentials(
                secrets, namespace, own.name, own.token_key, own.ca_key
            )
        address = (section.address if section is not None else None) or self.default_address
        return PrometheusSettings(
            address=operator_default_address(address),
            bearer_token=token,
            ca_file=ca,
            timeout_s=_seconds(section.timeout) if section is not None else DEFAULT_TIMEOUT_S,
        )


def _seconds(timeout: str) -> float:
    return min(parse_duration(timeout).total_seconds(), MAX_TIMEOUT_S)


def _split(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


RUNTIME: Final = PrometheusRuntime()
