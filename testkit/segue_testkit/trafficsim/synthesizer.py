"""Turning elapsed time, the split and the configuration into exact request counts."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from segue_testkit.trafficsim.config import VERSIONS, SimConfig
from segue_testkit.trafficsim.sources import Split

# Spread of latencies around the mean (lognormal sigma): p99 is about 1.7x the mean.
LATENCY_SIGMA = 0.25
# A customer in the split's segment: everything goes to the new version.
SEGMENT_SHARES = {"legacy": 0.0, "new": 1.0}


@dataclass(frozen=True)
class Batch:
    """Requests one version received in one tick (from one customer, when there are any)."""

    version: str
    requests: int
    errors: int
    latencies_s: tuple[float, ...]
    customer: str | None = None


def shares(weight: float | None) -> dict[str, float]:
    if weight is None:
        return {"legacy": 0.0, "new": 0.0}
    new = min(max(weight, 0.0), 100.0) / 100.0
    return {"legacy": 1.0 - new, "new": new}


class Synthesizer:
    """Turns elapsed time, the split and the configuration into exact request counts.

    Without customers, each version completes ``rate * dt * share * throughput`` requests
    (the rest are not counted: the version could not keep up). With customers, the
    rate is spread evenly over them; a customer in the split's segment sends everything to
    the new version, every other one splits by the weight. Fractions of requests and of
    errors carry over between ticks (per customer and version), so over any span the counts
    match the rate, shares and error rates to within one request.
    """

    def __init__(self, seed: int | None = None, customers: Sequence[str] = ()) -> None:
        self.random = random.Random(seed)
        self.customers = tuple(customers)
        self.carry: dict[tuple[str | None, str], float] = {}
        self.error_carry: dict[tuple[str | None, str], float] = {}

    def step(self, dt: float, split: Split, config: SimConfig) -> list[Batch]:
        if not self.customers:
            return self._flows(dt, None, shares(split.weight), config.rate, config)
        by_weight = shares(split.weight)
        rate = config.rate / len(self.customers)
        batches = []
        for customer in self.customers:
            routed = SEGMENT_SHARES if customer in split.segment else by_weight
            batches += self._flows(dt, customer, routed, rate, config)
        return batches

    def _flows(
        self,
        dt: float,
        customer: str | None,
        routed: dict[str, float],
        rate: float,
        config: SimConfig,
    ) -> list[Batch]:
        batches = []
        for version in VERSIONS:
            key = (customer, version)
            share = routed[version]
            if share <= 0:
                # Forget fractions: a version that gets traffic again starts clean.
                self.carry[key] = self.error_carry[key] = 0.0
                continue
            b = config.behaviour(version)
            self.carry[key] = self.carry.get(key, 0.0) + rate * dt * share * b.throughput
            n = int(self.carry[key])
            self.carry[key] -= n
            if n == 0:
                continue
            self.error_carry[key] = self.error_carry.get(key, 0.0) + n * b.error_rate
            errors = min(n, int(self.error_carry[key]))
            self.error_carry[key] -= errors
            batches.append(Batch(version, n, errors, self.latencies(n, b.latency_ms), customer))
        return batches

    def latencies(self, n: int, mean_ms: float) -> tuple[float, ...]:
        if mean_ms <= 0:
            return (0.0,) * n
        # Lognormal with this mean: always positive, with a realistic right tail.
        mu = math.log(mean_ms / 1000.0) - LATENCY_SIGMA**2 / 2
        return tuple(self.random.lognormvariate(mu, LATENCY_SIGMA) for _ in range(n))
