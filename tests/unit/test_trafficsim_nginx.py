"""The simulator's reading of an ingress-nginx canary Ingress: the weight, and which
customers a by-header rule sends to the canary, as ingress-nginx's balancer decides."""

from __future__ import annotations

import argparse

import pytest

from segue_testkit.trafficsim.cli import parse_args
from segue_testkit.trafficsim.sources import Split
from segue_testkit.trafficsim.sources.nginx import KIND, CanaryIngressSplit, split_from_canary

P = "nginx.ingress.kubernetes.io"
CUSTOMERS = ("acme", "globex", "initech", "always")


def split(**annotations: str) -> Split:
    full = {f"{P}/{k.replace('_', '-')}": v for k, v in annotations.items()}
    return split_from_canary(full, CUSTOMERS)


def test_the_weight_is_canary_weight_out_of_the_total() -> None:
    assert split(canary="true") == Split(0.0)
    assert split(canary="true", canary_weight="25") == Split(25.0)
    assert split(canary="true", canary_weight="25", canary_weight_total="50") == Split(50.0)
    assert split(canary="true", canary_weight="500") == Split(100.0)
    assert split(canary="true", canary_weight="x") == Split(0.0)


def test_an_ingress_that_is_no_canary_gets_nothing() -> None:
    assert split(canary_weight="50") == Split(0.0)
    assert split(canary="false", canary_weight="50") == Split(0.0)


def test_a_pattern_picks_the_customers_it_finds() -> None:
    rule = {"canary": "true", "canary_weight": "10", "canary_by_header": "X-Customer-Id"}
    assert split(**rule, canary_by_header_pattern="^(acme|globex)$") == Split(
        10.0, frozenset({"acme", "globex"})
    )
    # Unanchored, as ngx.re.match searches.
    assert split(**rule, canary_by_header_pattern="me").segment == {"acme"}
    # An exact value takes precedence over the pattern.
    assert split(
        **rule, canary_by_header_pattern="^(acme|globex)$", canary_by_header_value="initech"
    ).segment == {"initech"}
    # A header alone sends the value "always".
    assert split(**rule).segment == {"always"}


def test_a_rule_on_another_header_picks_no_customer() -> None:
    found = split(canary="true", canary_by_header="x-tenant", canary_by_header_pattern="acme")
    assert found == Split(0.0)


def test_the_command_line_builds_the_source() -> None:
    args = parse_args(
        [
            "--app",
            "a",
            "--legacy-version",
            "v1",
            "--new-version",
            "v2",
            "--canary-ingress",
            "shop/checkout-canary",
            "--customers",
            "acme,globex",
            "--customer-header",
            "x-tenant",
            "--annotation-prefix",
            "custom.example",
        ]
    )
    source = KIND.build(args, lambda: None)  # the client is made, not used
    assert KIND.chosen(args)
    assert isinstance(source, CanaryIngressSplit)
    assert source.describe() == "canary Ingress shop/checkout-canary"
    assert (source.customers, source.customer_header, source.prefix) == (
        ("acme", "globex"),
        "x-tenant",
        "custom.example",
    )


def test_the_ingress_flag_needs_a_namespace() -> None:
    args = parse_args(
        [
            "--app",
            "a",
            "--legacy-version",
            "v1",
            "--new-version",
            "v2",
            "--canary-ingress",
            "checkout-canary",
        ]
    )
    with pytest.raises(argparse.ArgumentTypeError, match="--canary-ingress must be NAMESPACE/NAME"):
        KIND.build(args, lambda: None)
