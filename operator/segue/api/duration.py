"""Durations as users write them: ``30s``, ``5m``, ``2h``, ``1h30m``, ``500ms``.

Every duration field of the spec has bounds (:class:`DurationBounds`), checked by pydantic and
by a CEL rule in the CRD with the same message. The API server's CEL ``duration()`` parses
into 64-bit nanoseconds and fails to evaluate past ~292 years, so the rules only call it on
text that matches :data:`SAFE_DURATION_PATTERN`, which caps the digits per unit; anything
longer is out of every field's bounds anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Final

from pydantic import AfterValidator, StringConstraints

from segue.api.text import cap

DURATION_PATTERN: Final = r"^([0-9]+(ms|s|m|h))+$"
MAX_DURATION_LENGTH: Final = 32
# Digits per unit after leading zeros. Each part stays below 10^18 ns and 32 characters hold
# at most three such parts, far below 2^63 ns, so nothing that matches overflows in CEL.
# The largest bound of any field (720h = 2592000000ms) fits every unit's limit.
_MAX_DIGITS: Final = {"ms": 12, "s": 9, "m": 7, "h": 5}
SAFE_DURATION_PATTERN: Final = (
    "^(" + "|".join(f"0*[0-9]{{1,{n}}}{unit}" for unit, n in _MAX_DIGITS.items()) + ")+$"
)
_PART: Final = re.compile(r"([0-9]+)(ms|s|m|h)")
_FULL: Final = re.compile(DURATION_PATTERN)
_UNIT_MILLIS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_MAX_MILLIS: Final = (2**63 - 1) // 1_000_000  # what a Go time.Duration holds


class DurationError(ValueError):
    """A duration is not like 30s, 5m or 1h30m, or is too large to be one."""


def parse_duration(text: str) -> timedelta:
    """``1h30m`` -> 1:30:00. Raises :class:`DurationError` for anything else, including
    numbers too large for the API server's durations; never another exception."""
    shown = repr(cap(text, 48))
    if len(text) > MAX_DURATION_LENGTH:
        raise DurationError(
            f"invalid duration {shown}: longer than {MAX_DURATION_LENGTH} characters"
        )
    if not _FULL.fullmatch(text):
        raise DurationError(
            f"invalid duration {shown}: use a number and a unit (ms, s, m, h), e.g. 30s or 1h30m"
        )
    # Milliseconds are kept exact (timedelta(seconds=0.001) would round through a float).
    millis = 0
    for number, unit in _PART.findall(text):
        if len(number.lstrip("0")) > _MAX_DIGITS[unit]:
            raise DurationError(f"duration {shown} is out of range")
        millis += int(number) * _UNIT_MILLIS[unit]
    if millis > _MAX_MILLIS:
        raise DurationError(f"duration {shown} is out of range")
    return timedelta(milliseconds=millis)


def _check(text: str) -> str:
    parse_duration(text)
    return text


DurationText = Annotated[
    str, StringConstraints(max_length=MAX_DURATION_LENGTH, pattern=DURATION_PATTERN)
]

# Kept as the text the user wrote, so a manifest round-trips unchanged; parse when needed.
Duration = Annotated[DurationText, AfterValidator(_check)]


@dataclass(frozen=True)
class DurationBounds:
    """The range of one duration field, inclusive at both ends, and how it is checked."""

    path: str  # as users read it, e.g. spec.analysis.interval
    low: str
    high: str
    hint: str = ""  # after the upper bound, e.g. " (30 days)"

    def __post_init__(self) -> None:
        parse_duration(self.low)
        parse_duration(self.high)
        # The message is also a CEL string literal.
        if "'" in self.message or "\\" in self.message:
            raise ValueError(f"quote or backslash in {self.message!r}")

    @property
    def message(self) -> str:
        return f"{self.path}: must be between {self.low} and {self.high}{self.hint}"

    def check(self, text: str) -> str:
        """The pydantic side (``Annotated[DurationText, AfterValidator(bounds.check)]``):
        ``text`` if it is in range, else a ValueError naming the field, range and value."""
        try:
            value: timedelta | None = parse_duration(text)
        except DurationError:
            if len(text) > MAX_DURATION_LENGTH or not _FULL.fullmatch(text):
                raise
            value = None  # shaped like a duration, but out of every range
        if value is None or not parse_duration(self.low) <= value <= parse_duration(self.high):
            raise DurationError(f"{self.message}, got {cap(text, 48)}")
        return text

    def cel(self, field: str) -> dict[str, str]:
        """The API server's side, for the object holding ``field``: skipped when the field
        is absent or not a duration at all (the schema's pattern reports that), refused when
        it has more digits than a field could need, so ``duration()`` never overflows."""
        value = f"self.{field}"
        rule = (
            f"!has({value}) || !{value}.matches('{DURATION_PATTERN}') || "
            f"({value}.matches('{SAFE_DURATION_PATTERN}') && "
            f"duration({value}) >= duration('{self.low}') && "
            f"duration({value}) <= duration('{self.high}'))"
        )
        return {
            "rule": rule,
            "message": self.message,
            "messageExpression": f"'{self.message}, got ' + {value}",
            "fieldPath": f".{field}",
        }
