"""Inputs and outputs of analysis, as plain frozen values.

The controller maps the Rollout's API model onto the inputs, so this package does not depend
on ``segue.api``. The outputs are the engine's own observation types (``GateVerdict``,
``GateRound``): a round is handed to the engine as it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import get_args

from segue.engine.types import GateRound, GateVerdict, Severity

__all__ = ["GateRound", "GateSpec", "GateVerdict", "PrometheusSettings", "RoundContext", "Severity"]

SEVERITIES: tuple[Severity, ...] = get_args(Severity)

DEFAULT_PROMETHEUS_ADDRESS = "http://127.0.0.1:9090"
PROMETHEUS_ADDRESS_ENV = "SEGUE_PROMETHEUS_ADDRESS"
DEFAULT_TIMEOUT_S = 5.0
# The API refuses a longer timeout too; this cap holds for any caller (a hanging Prometheus
# must not hold a query worker for minutes).
MAX_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class GateSpec:
    """One health gate as the Rollout declares it.

    Exactly one of ``query`` (PromQL with ``{{ placeholders }}``) or ``template`` (a
    built-in, see ``templates.py``) is set. Bounds left ``None`` fall back to the template's;
    ``failure_limit``/``on_failure`` left ``None`` fall back to the template's defaults, or
    to 1 and ``rollback`` (immediate) for a custom query.
    """

    name: str
    query: str | None = None
    template: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    max: float | None = None
    min: float | None = None
    max_ratio_to_legacy: float | None = None
    min_ratio_to_legacy: float | None = None
    failure_limit: int | None = None
    on_failure: str | None = None
    # Divide each version's value by its traffic share before judging (throughput-like
    # metrics, which scale with the weight a version receives).
    per_traffic_share: bool | None = None


@dataclass(frozen=True)
class PrometheusSettings:
    """Where and how to reach Prometheus. ``hash`` lets providers be cached per settings.

    ``timeout_s`` bounds one query (the HTTP timeouts and Prometheus' own evaluation
    timeout); anything above :data:`MAX_TIMEOUT_S` is capped to it.
    """

    address: str = DEFAULT_PROMETHEUS_ADDRESS
    bearer_token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.timeout_s <= MAX_TIMEOUT_S:  # also catches NaN
            object.__setattr__(self, "timeout_s", MAX_TIMEOUT_S)

    @classmethod
    def from_env(
        cls,
        address: str | None = None,
        *,
        bearer_token: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> PrometheusSettings:
        """The Rollout's address if it names one, else the operator-wide default."""
        chosen = address or os.environ.get(PROMETHEUS_ADDRESS_ENV) or DEFAULT_PROMETHEUS_ADDRESS
        return cls(
            address=chosen.rstrip("/"),
            bearer_token=bearer_token,
            ca_file=ca_file,
            timeout_s=timeout_s,
        )


@dataclass(frozen=True)
class RoundContext:
    """What a round needs to know about the Rollout it evaluates.

    ``weight`` is the percentage of traffic the new version currently receives (0..100).
    """

    namespace: str
    rollout: str
    legacy_version: str
    new_version: str
    interval: str
    weight: float
