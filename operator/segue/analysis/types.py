"""Plain values analysis works with besides the API's own: where Prometheus is, and what a
round needs to know about the Rollout it evaluates.

A gate is the API's ``Gate`` (``segue.api.spec``) on its way in and the API's ``GateStatus``
(``segue.api.status``) on its way out, gathered into the engine's ``GateRound``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_PROMETHEUS_ADDRESS = "http://127.0.0.1:9090"
PROMETHEUS_ADDRESS_ENV = "SEGUE_PROMETHEUS_ADDRESS"
DEFAULT_TIMEOUT_S = 5.0
# The API refuses a longer timeout too; this cap holds for any caller (a hanging Prometheus
# must not hold a query worker for minutes).
MAX_TIMEOUT_S = 30.0


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
