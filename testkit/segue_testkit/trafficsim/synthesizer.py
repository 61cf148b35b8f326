"""Turning elapsed time, the weight and the configuration into exact request counts."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from segue_testkit.trafficsim.config import VERSIONS, SimConfig

# Spread of latencies around the mean (lognormal sigma): p99 is about 1.7x the mean.
LATENCY_SIGMA = 0.25


@dataclass(frozen=True)
class Batch:
    """Requests one version received in one tick."""

    version: str
    requests: int
    errors: int
    latencies_s: tuple[float, ...]


def shares(weight: float | None) -> dict[str, float]:
    if weight is None:
        return {"legacy": 0.0, "new": 0.0}
    new = min(max(weight, 0.0), 100.0) / 100.0
    return {"legacy": 1.0 - new, "new": new}


class Synthesizer:
    """Turns elapsed time, weight and configuration into exact request counts.

    Fractions of requests and of errors carry over between ticks, so over any span the
    counts match ``rate * seconds * share`` (and the error rate) to within one request.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.random = random.Random(seed)
        self.carry = dict.fromkeys(VERSIONS, 0.0)
        self.error_carry = dict.fromkeys(VERSIONS, 0.0)

    def step(self, dt: float, weight: float | None, config: SimConfig) -> list[Batch]:
        batches = []
        for version, share in shares(weight).items():
            if share <= 0:
                # Forget fractions: a version that gets traffic again starts clean.
                self.carry[version] = self.error_carry[version] = 0.0
                continue
            b = config.behaviour(version)
            self.carry[version] += config.rate * dt * share
            n = int(self.carry[version])
            self.carry[version] -= n
            if n == 0:
                continue
            self.error_carry[version] += n * b.error_rate
            errors = min(n, int(self.error_carry[version]))
            self.error_carry[version] -= errors
            batches.append(Batch(version, n, errors, self.latencies(n, b.latency_ms)))
        return batches

    def latencies(self, n: int, mean_ms: float) -> tuple[float, ...]:
        if mean_ms <= 0:
            return (0.0,) * n
        # Lognormal with this mean: always positive, with a realistic right tail.
        mu = math.log(mean_ms / 1000.0) - LATENCY_SIGMA**2 / 2
        return tuple(self.random.lognormvariate(mu, LATENCY_SIGMA) for _ in range(n))
