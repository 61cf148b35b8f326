"""Durations as users write them: ``30s``, ``5m``, ``2h``, ``1h30m``, ``500ms``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Final

from pydantic import AfterValidator, StringConstraints

DURATION_PATTERN: Final = r"^([0-9]+(ms|s|m|h))+$"
_PART: Final = re.compile(r"([0-9]+)(ms|s|m|h)")
_FULL: Final = re.compile(DURATION_PATTERN)
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class DurationError(ValueError):
    """A duration is not like 30s, 5m or 1h30m."""


def parse_duration(text: str) -> timedelta:
    """``1h30m`` -> 1:30:00. Raises :class:`DurationError` for anything else."""
    if not _FULL.fullmatch(text):
        raise DurationError(
            f"invalid duration {text!r}: use a number and a unit (ms, s, m, h), e.g. 30s or 1h30m"
        )
    # Milliseconds are kept exact (timedelta(seconds=0.001) would round through a float).
    millis = 0
    for number, unit in _PART.findall(text):
        millis += int(number) * int(_UNIT_SECONDS[unit] * 1000)
    return timedelta(milliseconds=millis)


def _check(text: str) -> str:
    parse_duration(text)
    return text


# Kept as the text the user wrote, so a manifest round-trips unchanged; parse when needed.
Duration = Annotated[
    str,
    StringConstraints(max_length=32, pattern=DURATION_PATTERN),
    AfterValidator(_check),
]
