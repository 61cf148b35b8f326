"""A gate's bounds (``max``, ``min``, ``maxRatioToLegacy``, ``minRatioToLegacy`` of the API's
``Gate``): which are set, whether they compare with legacy, and how they read.

Pure, and imports the API only for type checking: the providers' pure parts use it, and the
API assembles its ``analysis`` section from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from segue.api.spec import Gate

# The bound fields of a Gate, in the order they are checked and shown.
BOUND_FIELDS: Final = ("max", "min", "max_ratio_to_legacy", "min_ratio_to_legacy")
# Their names on the wire, for messages.
BOUND_NAMES: Final = ("max", "min", "maxRatioToLegacy", "minRatioToLegacy")


def bounds(gate: Gate) -> tuple[float | None, float | None, float | None, float | None]:
    return (gate.max, gate.min, gate.max_ratio_to_legacy, gate.min_ratio_to_legacy)


def has_bound(gate: Gate) -> bool:
    return any(b is not None for b in bounds(gate))


def compares_with_legacy(gate: Gate) -> bool:
    """A ratio bound: the legacy version's value is needed to judge the gate."""
    return gate.max_ratio_to_legacy is not None or gate.min_ratio_to_legacy is not None


def bound_text(gate: Gate) -> str:
    """Human-readable bounds, e.g. ``<= 0.05`` or ``<= 2x legacy and <= 0.5``."""
    parts = []
    if gate.max is not None:
        parts.append(f"<= {_fmt(gate.max)}")
    if gate.min is not None:
        parts.append(f">= {_fmt(gate.min)}")
    if gate.max_ratio_to_legacy is not None:
        parts.append(f"<= {_fmt(gate.max_ratio_to_legacy)}x legacy")
    if gate.min_ratio_to_legacy is not None:
        parts.append(f">= {_fmt(gate.min_ratio_to_legacy)}x legacy")
    text = " and ".join(parts) if parts else "no bound"
    return text + (" per unit of traffic share" if gate.per_traffic_share and parts else "")


def _fmt(x: float) -> str:
    return f"{x:.4g}"
