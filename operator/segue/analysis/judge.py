"""Values to verdicts. Pure: no I/O, no clock.

No data (an empty result, NaN or Inf, read as ``None``) on a side a bound needs is
*Inconclusive*, never a failure and never a pass. A gate fails when any of its bounds is
violated; it passes only when every bound could be checked and held.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

from segue.analysis.bounds import bound_text, compares_with_legacy
from segue.analysis.errors import (
    ProviderError,
    ProviderUnavailable,
    QueryRejected,
    UnusableResult,
)
from segue.api.spec import Gate
from segue.api.status import GateStatus

_Check = Literal["pass", "fail", "unknown"]


def judge(
    gate: Gate,
    value: float | None,
    legacy_value: float | None,
    *,
    weight: float,
    at: datetime | None = None,
) -> GateStatus:
    """The gate's status for the new version's ``value`` (and legacy's, for ratio bounds),
    evaluated ``at``. ``gate`` is the gate as it runs: bounds and policy filled in.

    ``weight`` is the new version's traffic percentage; per-traffic-share gates divide each
    side's value by its share (new: weight/100, legacy: 1 - weight/100) first.
    """
    notes: list[str] = []
    if gate.per_traffic_share:
        new_share = min(max(weight, 0.0), 100.0) / 100
        legacy_share = 1 - new_share
        if value is not None:
            if new_share > 0:
                notes.append(f"new {_fmt(value)} at {_fmt(weight)}% of traffic")
                value = value / new_share
            else:
                value = None
                notes.append("the new version receives no traffic (weight 0)")
        if legacy_value is not None:
            if legacy_share > 0:
                notes.append(f"legacy {_fmt(legacy_value)} at {_fmt(100 - weight)}% of traffic")
                legacy_value = legacy_value / legacy_share
            else:
                legacy_value = None
                if compares_with_legacy(gate):
                    notes.append("legacy receives no traffic (weight 100): nothing to compare")

        # A share so small that the division overflows carries no information.
        value = value if value is None or math.isfinite(value) else None
        legacy_value = legacy_value if legacy_value is None or math.isfinite(legacy_value) else None

    checks: list[tuple[_Check, str]] = []
    if gate.max is not None:
        checks.append(_absolute(value, gate.max, upper=True))
    if gate.min is not None:
        checks.append(_absolute(value, gate.min, upper=False))
    if gate.max_ratio_to_legacy is not None:
        checks.append(_relative(value, legacy_value, gate.max_ratio_to_legacy, upper=True))
    if gate.min_ratio_to_legacy is not None:
        checks.append(_relative(value, legacy_value, gate.min_ratio_to_legacy, upper=False))

    failed = [text for state, text in checks if state == "fail"]
    unknown = [text for state, text in checks if state == "unknown"]
    if failed:
        verdict: Literal["Pass", "Fail", "Inconclusive"] = "Fail"
        details = failed
    elif unknown or not checks:
        verdict = "Inconclusive"
        details = unknown or ["no bound to check"]
    else:
        verdict = "Pass"
        details = [text for _, text in checks]
    message = "; ".join(_dedupe(details))
    if notes:
        message += f" ({'; '.join(notes)})"
    return GateStatus(
        name=gate.name,
        verdict=verdict,
        value=value,
        legacy_value=legacy_value,
        bound=bound_text(gate),
        failure_limit=gate.failure_limit,
        on_failure=gate.on_failure,
        last_evaluated=at,
        message=message,
    )


def error_status(
    gate: Gate,
    message: str,
    *,
    value: float | None = None,
    legacy_value: float | None = None,
    at: datetime | None = None,
) -> GateStatus:
    """An ``Error`` status: the gate could not be judged (misconfigured, or its query
    failed). ``gate`` as it would run, for its bound and policy."""
    return GateStatus(
        name=gate.name,
        verdict="Error",
        value=value,
        legacy_value=legacy_value,
        bound=bound_text(gate),
        failure_limit=gate.failure_limit,
        on_failure=gate.on_failure,
        last_evaluated=at,
        message=message,
    )


def provider_error_message(gate: str, error: ProviderError, provider: str = "Prometheus") -> str:
    """What the user reads when a query of ``gate`` failed."""
    if isinstance(error, UnusableResult):
        return f"the query of gate {gate} cannot be judged: {error}"
    if isinstance(error, QueryRejected):
        return f"{provider} rejected the query of gate {gate}: {error.detail}"
    if isinstance(error, ProviderUnavailable):
        return f"{provider} unavailable for gate {gate}: {error}"
    return f"query of gate {gate} failed: {error}"


def _absolute(value: float | None, bound: float, *, upper: bool) -> tuple[_Check, str]:
    op_ok, op_bad = ("<=", ">") if upper else (">=", "<")
    if value is None:
        return "unknown", "no data for the new version"
    ok = value <= bound if upper else value >= bound
    if ok:
        return "pass", f"{_fmt(value)} {op_ok} {_fmt(bound)}"
    return "fail", f"{_fmt(value)} {op_bad} {'max' if upper else 'min'} {_fmt(bound)}"


def _relative(
    value: float | None, legacy: float | None, ratio: float, *, upper: bool
) -> tuple[_Check, str]:
    op_ok, op_bad = ("<=", ">") if upper else (">=", "<")
    if value is None:
        return "unknown", "no data for the new version"
    if legacy is None:
        return "unknown", "no data for the legacy version to compare with"
    if legacy == 0:
        if value == 0:
            return "pass", f"{_fmt(value)}, as legacy"
        return "unknown", f"legacy is 0: a ratio to it is undefined (new is {_fmt(value)})"
    if legacy < 0:
        return "unknown", f"legacy is negative ({_fmt(legacy)}): a ratio to it is meaningless"
    actual = value / legacy
    ok = actual <= ratio if upper else actual >= ratio
    text = f"{_fmt(value)} is {_fmt(actual)}x legacy {_fmt(legacy)}"
    if ok:
        return "pass", f"{text} {op_ok} {_fmt(ratio)}x"
    return "fail", f"{text} {op_bad} {_fmt(ratio)}x"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
