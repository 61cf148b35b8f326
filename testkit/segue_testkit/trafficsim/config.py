"""The simulator's run-time configuration (total rate; each version's behaviour) and the
partial JSON updates ``PUT /config`` applies to it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

VERSIONS = ("legacy", "new")
MAX_RATE = 1e6
MAX_LATENCY_MS = 1e6


@dataclass(frozen=True)
class Behaviour:
    """How one version answers: share of errors (0..1), mean latency, and throughput: the
    fraction (0..1) of the requests routed to it that it completes. The rest are not counted
    at all, as if the version could not keep up."""

    error_rate: float = 0.0
    latency_ms: float = 50.0
    throughput: float = 1.0

    def to_json(self) -> dict[str, float]:
        return {
            "errorRate": self.error_rate,
            "latencyMs": self.latency_ms,
            "throughput": self.throughput,
        }


@dataclass(frozen=True)
class SimConfig:
    rate: float = 200.0
    legacy: Behaviour = field(default_factory=Behaviour)
    new: Behaviour = field(default_factory=Behaviour)

    def behaviour(self, version: str) -> Behaviour:
        return self.legacy if version == "legacy" else self.new

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "legacy": self.legacy.to_json(), "new": self.new.to_json()}


def _number(where: str, raw: object, lo: float, hi: float = math.inf) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{where} must be a number, got {raw!r}")
    value = float(raw)
    if not (lo <= value <= hi) or math.isnan(value):
        raise ValueError(f"{where} must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def apply_patch(config: SimConfig, patch: object) -> SimConfig:
    """``config`` updated by a partial JSON object; ValueError names what is wrong."""
    if not isinstance(patch, dict):
        raise ValueError("expected a JSON object")
    unknown = set(patch) - {"rate", *VERSIONS}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; known: rate, legacy, new")
    result = config
    if "rate" in patch:
        result = replace(result, rate=_number("rate", patch["rate"], 0, MAX_RATE))
    for version in VERSIONS:
        if version not in patch:
            continue
        part = patch[version]
        if not isinstance(part, dict):
            raise ValueError(f"{version} must be an object like {{'errorRate': 0.1}}")
        bad = set(part) - {"errorRate", "latencyMs", "throughput"}
        if bad:
            raise ValueError(
                f"unknown keys in {version}: {sorted(bad)}; known: errorRate, latencyMs, throughput"
            )
        b = result.behaviour(version)
        if "errorRate" in part:
            b = replace(b, error_rate=_number(f"{version}.errorRate", part["errorRate"], 0, 1))
        if "latencyMs" in part:
            b = replace(
                b,
                latency_ms=_number(f"{version}.latencyMs", part["latencyMs"], 0, MAX_LATENCY_MS),
            )
        if "throughput" in part:
            b = replace(b, throughput=_number(f"{version}.throughput", part["throughput"], 0, 1))
        result = replace(result, legacy=b) if version == "legacy" else replace(result, new=b)
    return result
