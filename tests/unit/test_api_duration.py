from __future__ import annotations

import re
from datetime import timedelta

import pytest

from segue.api import DurationError, parse_duration
from segue.api.duration import SAFE_DURATION_PATTERN, DurationBounds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1m30s250ms", timedelta(minutes=1, seconds=30, milliseconds=250)),
        ("0s", timedelta(0)),
        ("90m", timedelta(minutes=90)),
    ],
)
def test_parses(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "s", "1d", "1.5h", "-1m", "1h 30m", "5M", "m5"])
def test_rejects(text: str) -> None:
    with pytest.raises(DurationError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text", ["99999999999h", "100000h", "10000000000s", "1000000000000ms", "9" * 30 + "ms"]
)
def test_absurd_values_raise_duration_error(text: str) -> None:
    with pytest.raises(DurationError, match="out of range"):
        parse_duration(text)


def test_leading_zeros_do_not_count_as_digits() -> None:
    assert parse_duration("0000000001h") == timedelta(hours=1)


def test_too_long_text_raises_duration_error() -> None:
    with pytest.raises(DurationError, match="longer than 32 characters"):
        parse_duration("1s" * 17)
    with pytest.raises(DurationError):
        parse_duration("9" * 100_000 + "h")  # int() would refuse that many digits


def test_the_largest_values_the_pattern_admits_fit_a_go_duration() -> None:
    # What the CEL rules hand to duration(): at most three maximal parts in 32 characters.
    worst = parse_duration("999999999s999999999s999999999s")
    assert worst.total_seconds() * 1e9 < 2**63 - 1
    assert re.fullmatch(SAFE_DURATION_PATTERN, "999999999s999999999s999999999s")
    for part in ("99999h", "9999999m", "999999999s", "999999999999ms"):
        assert re.fullmatch(SAFE_DURATION_PATTERN, part), part
        assert parse_duration(part).total_seconds() * 1e9 < 1e18
    for part in ("100000h", "10000000m", "1000000000s", "1000000000000ms"):
        assert not re.fullmatch(SAFE_DURATION_PATTERN, part), part


BOUNDS = DurationBounds("spec.analysis.interval", "1s", "1h")


@pytest.mark.parametrize("text", ["1s", "1000ms", "30s", "59m60s", "1h"])
def test_bounds_accept(text: str) -> None:
    assert BOUNDS.check(text) == text


@pytest.mark.parametrize("text", ["0s", "999ms", "1h1ms", "61m", "99999999999h"])
def test_bounds_refuse_with_field_and_value(text: str) -> None:
    with pytest.raises(DurationError) as e:
        BOUNDS.check(text)
    assert str(e.value) == f"spec.analysis.interval: must be between 1s and 1h, got {text}"


def test_bounds_pass_shape_errors_through() -> None:
    with pytest.raises(DurationError, match="invalid duration '1d'"):
        BOUNDS.check("1d")


def test_every_value_within_a_spec_bound_matches_the_safe_pattern() -> None:
    # So the CEL rule refuses by pattern only what is out of range anyway.
    for text in ("720h", "43200m", "2592000s", "2592000000ms", "24h", "86400s"):
        assert re.fullmatch(SAFE_DURATION_PATTERN, text), text
