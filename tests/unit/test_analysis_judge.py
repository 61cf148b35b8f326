"""Values to verdicts."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segue.analysis.errors import ProviderUnavailable, QueryRejected, UnusableResult
from segue.analysis.judge import error_status, judge, provider_error_message
from segue.api.spec import Gate
from segue.api.status import GateStatus

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def gate(per_share: bool = False, **bounds: Any) -> Gate:
    """A gate as it runs: bounds and policy filled in. Built unchecked, as resolution
    copies it, so that a gate without any bound can be judged too."""
    return Gate.model_construct(
        name="g",
        query="q",
        failure_limit=3,
        on_failure="rollback-graceful",
        per_traffic_share=per_share,
        **bounds,
    )


def message(status: GateStatus) -> str:
    assert status.message is not None
    return status.message


def test_max_pass_and_fail():
    v = judge(gate(max=0.05), 0.01, None, weight=10)
    assert (v.verdict, v.value, v.bound, v.message) == ("Pass", 0.01, "<= 0.05", "0.01 <= 0.05")
    assert judge(gate(max=0.05), 0.01, None, weight=10, at=AT).last_evaluated == AT
    v = judge(gate(max=0.05), 0.2, 0.0, weight=10)
    assert (v.verdict, v.message) == ("Fail", "0.2 > max 0.05")
    assert (v.legacy_value, v.on_failure, v.failure_limit, v.name) == (
        0.0,
        "rollback-graceful",
        3,
        "g",
    )


def test_bound_is_inclusive():
    assert judge(gate(max=0.05), 0.05, None, weight=10).verdict == "Pass"
    assert judge(gate(min=0.95), 0.95, None, weight=10).verdict == "Pass"
    assert judge(gate(max_ratio_to_legacy=2), 2.0, 1.0, weight=10).verdict == "Pass"


def test_min():
    assert judge(gate(min=0.95), 0.99, None, weight=10).verdict == "Pass"
    v = judge(gate(min=0.95), 0.8, None, weight=10)
    assert (v.verdict, v.message) == ("Fail", "0.8 < min 0.95")


def test_no_data_is_inconclusive_never_pass_or_fail():
    v = judge(gate(max=0.05), None, 0.01, weight=10)
    assert (v.verdict, v.message) == ("Inconclusive", "no data for the new version")
    assert v.bound == "<= 0.05"


def test_ratio_bounds():
    v = judge(gate(max_ratio_to_legacy=2), 0.3, 0.1, weight=10)
    assert v.verdict == "Fail"
    assert v.message == "0.3 is 3x legacy 0.1 > 2x"
    v = judge(gate(max_ratio_to_legacy=2), 0.15, 0.1, weight=10)
    assert (v.verdict, v.message) == ("Pass", "0.15 is 1.5x legacy 0.1 <= 2x")
    v = judge(gate(min_ratio_to_legacy=0.9), 80, 100, weight=10)
    assert (v.verdict, v.bound) == ("Fail", ">= 0.9x legacy")


def test_ratio_without_legacy_data_is_inconclusive():
    v = judge(gate(max_ratio_to_legacy=2), 0.3, None, weight=10)
    assert v.verdict == "Inconclusive"
    assert "legacy" in message(v)


def test_ratio_to_zero_legacy():
    assert judge(gate(max_ratio_to_legacy=2), 0.0, 0.0, weight=10).verdict == "Pass"
    v = judge(gate(max_ratio_to_legacy=2), 0.1, 0.0, weight=10)
    assert v.verdict == "Inconclusive" and "legacy is 0" in message(v)
    assert judge(gate(min_ratio_to_legacy=0.9), 5.0, 0.0, weight=10).verdict == "Inconclusive"


def test_a_violated_bound_fails_even_if_another_is_unknown():
    v = judge(gate(max=0.05, max_ratio_to_legacy=2), 0.5, None, weight=10)
    assert v.verdict == "Fail"
    assert v.bound == "<= 0.05 and <= 2x legacy"
    v = judge(gate(max=0.05, max_ratio_to_legacy=2), 0.01, None, weight=10)
    assert v.verdict == "Inconclusive"


def test_throughput_per_unit_of_traffic_share():
    # 10 % of 200 rps is 20 rps, 90 % is 180: per unit of share both serve 200.
    v = judge(gate(per_share=True, min_ratio_to_legacy=0.9), 20.0, 180.0, weight=10)
    assert v.verdict == "Pass"
    assert v.value == pytest.approx(200)
    assert v.legacy_value == pytest.approx(200)
    assert v.bound == ">= 0.9x legacy per unit of traffic share"
    assert "at 10% of traffic" in message(v)
    # The new version loses a fifth of its requests: 16 rps at 10 % is 0.8x legacy.
    v = judge(gate(per_share=True, min_ratio_to_legacy=0.9), 16.0, 180.0, weight=10)
    assert v.verdict == "Fail"
    assert v.value == pytest.approx(160)


def test_throughput_at_weight_zero_and_hundred_is_inconclusive():
    v = judge(gate(per_share=True, min_ratio_to_legacy=0.9), 0.0, 200.0, weight=0)
    assert v.verdict == "Inconclusive" and "weight 0" in message(v)
    v = judge(gate(per_share=True, min_ratio_to_legacy=0.9), 200.0, 0.0, weight=100)
    assert v.verdict == "Inconclusive" and "weight 100" in message(v)


def test_error_status_and_messages():
    g = Gate(name="g", query="q", max=1, on_failure="pause", failure_limit=2)
    v = error_status(g, "boom", at=AT)
    assert (v.verdict, v.value, v.legacy_value, v.message) == ("Error", None, None, "boom")
    assert (v.bound, v.on_failure, v.failure_limit, v.last_evaluated) == ("<= 1", "pause", 2, AT)
    assert provider_error_message("lat", QueryRejected("parse error")) == (
        "Prometheus rejected the query of gate lat: parse error"
    )
    assert "cannot be judged: query returns 3 series" in provider_error_message(
        "lat", UnusableResult("query returns 3 series; aggregate it (e.g. sum(...))")
    )
    assert provider_error_message("lat", ProviderUnavailable("down")).startswith(
        "Prometheus unavailable for gate lat"
    )


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)
maybe = st.one_of(st.none(), finite)


@given(
    value=maybe,
    legacy=maybe,
    weight=st.floats(min_value=0, max_value=100),
    max_=maybe,
    min_=maybe,
    max_ratio=st.one_of(st.none(), st.floats(min_value=0.01, max_value=100)),
    min_ratio=st.one_of(st.none(), st.floats(min_value=0.01, max_value=100)),
    per_share=st.booleans(),
)
def test_properties(value, legacy, weight, max_, min_, max_ratio, min_ratio, per_share):
    bounds = {
        k: b
        for k, b in (
            ("max", max_),
            ("min", min_),
            ("max_ratio_to_legacy", max_ratio),
            ("min_ratio_to_legacy", min_ratio),
        )
        if b is not None
    }
    v = judge(gate(per_share, **bounds), value, legacy, weight=weight)
    assert v.verdict in ("Pass", "Fail", "Inconclusive")
    assert v.bound and v.message
    # No data on the new side never passes and never fails.
    if value is None:
        assert v.verdict == "Inconclusive"
    # A pass needs every bound checked: no pass without bounds or without a needed side.
    if v.verdict == "Pass":
        assert bounds
        assert v.value is not None and math.isfinite(v.value)
        if max_ratio is not None or min_ratio is not None:
            assert v.legacy_value is not None
