"""The simulator's flagd source: flagd's own evaluator reads a flag as an application would
(hand-written flag documents here; the operator's on the real cluster in
tests/e2e/test_rollout_flagd.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from segue_testkit.trafficsim.cli import parse_args
from segue_testkit.trafficsim.sources import Split
from segue_testkit.trafficsim.sources.flagd import split_of

CUSTOMERS = ("acme", "globex", "initech")


def doc(targeting: Any = None, default: str = "off", variants: Any = None) -> str:
    flag: dict[str, Any] = {
        "state": "ENABLED",
        "variants": variants or {"off": "checkout-v1", "on": "checkout-v2"},
        "defaultVariant": default,
    }
    if targeting is not None:
        flag["targeting"] = targeting
    return json.dumps({"flags": {"checkout": flag}})


def split(text: str) -> Split:
    return split_of(text, "checkout", "off", "on", CUSTOMERS, "customer-id")


def test_a_flag_without_targeting_is_all_or_nothing() -> None:
    assert split(doc()) == Split(0.0)
    assert split(doc(default="on")) == Split(100.0)


def test_a_fractional_split_is_measured_over_the_simulated_requests() -> None:
    measured = split(doc({"fractional": [["off", 70], ["on", 30]]}))
    assert measured.weight is not None and abs(measured.weight - 30) <= 2
    assert measured.segment == frozenset()


def test_customers_sent_to_the_new_variant_are_the_segment() -> None:
    segment = {"in": [{"var": "customer-id"}, ["acme", "globex"]]}
    only = split(doc({"if": [segment, "on", "off"]}))
    assert only == Split(0.0, frozenset({"acme", "globex"}))
    beside = split(doc({"if": [segment, "on", {"fractional": [["off", 80], ["on", 20]]}]}))
    assert beside.weight is not None and abs(beside.weight - 20) <= 2
    assert beside.segment == {"acme", "globex"}


def test_a_variant_of_neither_version_is_an_error() -> None:
    text = doc({"fractional": [["off", 50], ["beta", 50]]}, variants={"off": 1, "on": 2, "beta": 3})
    with pytest.raises(ValueError, match=r"resolves to \['beta'\], neither off nor on"):
        split(text)


def test_the_flagd_source_needs_the_flag_and_both_variants() -> None:
    base = ["--app", "a", "--legacy-version", "v1", "--new-version", "v2", "--flagd", "ns/f"]
    with pytest.raises(SystemExit):
        parse_args(base)
    with pytest.raises(SystemExit):
        parse_args([*base, "--flag", "c", "--legacy-variant", "x", "--new-variant", "x"])
    args = parse_args([*base, "--flag", "c", "--legacy-variant", "off", "--new-variant", "on"])
    assert (args.flagd, args.flagd_key, args.flag) == ("ns/f", "flags.flagd.json", "c")
