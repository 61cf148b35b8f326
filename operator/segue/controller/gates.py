"""Running health-gate rounds for one Rollout: spec to analysis inputs, credentials from
the Secret the Rollout names, and the round's result as an engine observation.

A round runs as a background task, so a slow or unreachable Prometheus never delays the
handling of an abort or an approval; its completion wakes the Rollout's loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from segue.analysis.provider import provider_for
from segue.analysis.round import evaluate_round
from segue.analysis.types import GateSpec, PrometheusSettings, RoundContext
from segue.api.duration import parse_duration
from segue.api.spec import Analysis, Gate, RolloutSpec
from segue.controller.kube import Secrets
from segue.engine import GateRound

log = logging.getLogger(__name__)


def gate_spec(gate: Gate) -> GateSpec:
    return GateSpec(
        name=gate.name,
        query=gate.query,
        template=gate.template,
        labels=dict(gate.labels or {}),
        max=gate.max,
        min=gate.min,
        max_ratio_to_legacy=gate.max_ratio_to_legacy,
        min_ratio_to_legacy=gate.min_ratio_to_legacy,
        failure_limit=gate.failure_limit,
        on_failure=gate.on_failure,
        per_traffic_share=gate.per_traffic_share,
    )


def _ca_file(pem: str) -> str:
    """Write a CA bundle once per content (the HTTP client wants a path)."""
    digest = hashlib.sha256(pem.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"segue-ca-{digest}.pem"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(pem)
        tmp.replace(path)
    return str(path)


class GateRunner:
    def __init__(self, secrets: Secrets, default_address: str | None) -> None:
        self._secrets = secrets
        self._default_address = default_address

    async def settings(self, namespace: str, analysis: Analysis) -> PrometheusSettings:
        prom = analysis.prometheus
        token: str | None = None
        ca: str | None = None
        if prom is not None and prom.secret_ref is not None:
            ref = prom.secret_ref
            data = await self._secrets.read(namespace, ref.name)
            token = data.get(ref.token_key) or None
            if data.get(ref.ca_key):
                ca = _ca_file(data[ref.ca_key])
        timeout = parse_duration(prom.timeout).total_seconds() if prom else 5.0
        return PrometheusSettings.from_env(
            (prom.address if prom else None) or self._default_address,
            bearer_token=token,
            ca_file=ca,
            timeout_s=timeout,
        )

    async def run(self, namespace: str, name: str, spec: RolloutSpec, weight: int) -> GateRound:
        analysis = spec.analysis
        assert analysis is not None
        now = datetime.now(UTC)
        try:
            settings = await self.settings(namespace, analysis)
        except Exception as e:  # the Secret is missing or unreadable: no round can run
            return GateRound(evaluated_at=now, results=(), error=f"Prometheus credentials: {e}")
        context = RoundContext(
            namespace=namespace,
            rollout=name,
            legacy_version=spec.legacy.effective_version(),
            new_version=spec.new.effective_version(),
            interval=analysis.interval,
            weight=float(weight),
        )
        provider = await asyncio.to_thread(provider_for, settings)
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

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
