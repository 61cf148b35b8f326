"""The canary annotations of an Ingress as ingress-nginx reads them, and the ones Segue
writes for a weight and a segment. Pure functions over the annotations' dict.

ingress-nginx sends a request to the canary Ingress's backend when its ``canary-by-header``
header matches (``canary-by-header-value`` exactly, else ``canary-by-header-pattern`` as a
PCRE, else the value ``always``), then when its ``canary-by-cookie`` cookie is ``always``,
else with probability ``canary-weight`` / ``canary-weight-total``. Segue owns all of these:
a write sets the weight (total 100) and, for a segment, the header and a pattern matching
exactly the segment's values, and removes every other one, so a rollback leaves no request
rule behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from segue.api.routing import SEGMENT_VALUE_PATTERN, Segment

CANARY: Final = "canary"
WEIGHT: Final = "canary-weight"
WEIGHT_TOTAL: Final = "canary-weight-total"
BY_HEADER: Final = "canary-by-header"
BY_HEADER_VALUE: Final = "canary-by-header-value"
BY_HEADER_PATTERN: Final = "canary-by-header-pattern"
BY_COOKIE: Final = "canary-by-cookie"
# Everything Segue writes or removes; `canary` itself must be there already (see router.py).
OWNED: Final = (
    CANARY,
    WEIGHT,
    WEIGHT_TOTAL,
    BY_HEADER,
    BY_HEADER_VALUE,
    BY_HEADER_PATTERN,
    BY_COOKIE,
)
TOTAL: Final = 100

# Segment values are letters, digits and ._:@/+=- (api/routing.py). In the pattern, `.` and `+`
# are escaped as regex metacharacters, and `@`, which ingress-nginx's annotation validation
# does not accept in a pattern, is written as the PCRE escape \x40.
_ESCAPES: Final = {".": r"\.", "+": r"\+", "@": r"\x40"}
_UNESCAPES: Final = {v: k for k, v in _ESCAPES.items()}
_ESCAPED: Final = re.compile(r"\\x40|\\.|[^\\]")
_PATTERN: Final = re.compile(r"\^\((.+)\)\$")
# Go's strconv.Atoi and ParseBool, which ingress-nginx reads the annotations with.
_INT: Final = re.compile(r"[+-]?[0-9]{1,18}")
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})


def key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}"


def is_canary(prefix: str, annotations: Mapping[str, str]) -> bool:
    return annotations.get(key(prefix, CANARY)) in _TRUE


def _int(value: str | None, default: int) -> int:
    if value is None or not _INT.fullmatch(value):
        return default
    return int(value)


def weight_of(prefix: str, annotations: Mapping[str, str]) -> int:
    """The share (percent) of requests no header or cookie rule picks that go to the
    canary: ``canary-weight`` out of ``canary-weight-total`` (default 100), each 0 when it
    does not parse, as ingress-nginx reads them."""
    total = _int(annotations.get(key(prefix, WEIGHT_TOTAL)), TOTAL)
    if total <= 0:
        total = TOTAL
    weight = min(max(_int(annotations.get(key(prefix, WEIGHT)), 0), 0), total)
    return round(100 * weight / total)


def header_pattern(values: Iterable[str]) -> str:
    """``^(a|b)$``: exactly these values, sorted so the same segment is the same text."""
    escaped = ("".join(_ESCAPES.get(c, c) for c in v) for v in sorted(values))
    return "^(" + "|".join(escaped) + ")$"


def pattern_values(pattern: str) -> list[str] | None:
    """The values of a pattern ``header_pattern`` wrote; None for any other pattern."""
    found = _PATTERN.fullmatch(pattern)
    if found is None:
        return None
    values = []
    for alternative in found.group(1).split("|"):
        tokens = _ESCAPED.findall(alternative)
        value = "".join(_UNESCAPES.get(t, t) for t in tokens)
        if not re.fullmatch(SEGMENT_VALUE_PATTERN, value):
            return None
        values.append(value)
    # Exactly what Segue writes for these values, or someone else's pattern.
    return values if header_pattern(values) == pattern else None


def segment_of(prefix: str, annotations: Mapping[str, str]) -> Segment | None:
    """The segment a by-header rule Segue wrote sends to the canary; None without one, or
    for a rule Segue did not write (the next write replaces or removes it)."""
    header = annotations.get(key(prefix, BY_HEADER))
    pattern = annotations.get(key(prefix, BY_HEADER_PATTERN))
    if not header or not pattern or annotations.get(key(prefix, BY_HEADER_VALUE)):
        return None
    values = pattern_values(pattern)
    if values is None:
        return None
    try:
        return Segment(header=header.lower(), values=values)
    except ValueError:
        return None


def owned(prefix: str, annotations: Mapping[str, str]) -> dict[str, str]:
    """The annotations Segue writes or removes, as they are."""
    keys = {key(prefix, name) for name in OWNED}
    return {k: v for k, v in annotations.items() if k in keys}


def wanted(prefix: str, weight: int, segment: Segment | None) -> dict[str, str]:
    """What ``owned`` must be for ``weight`` and ``segment``: nothing else of them stays."""
    out = {
        key(prefix, CANARY): "true",
        key(prefix, WEIGHT): str(weight),
        key(prefix, WEIGHT_TOTAL): str(TOTAL),
    }
    if segment is not None:
        out[key(prefix, BY_HEADER)] = segment.header
        out[key(prefix, BY_HEADER_PATTERN)] = header_pattern(segment.values)
    return out
