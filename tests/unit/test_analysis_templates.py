"""Built-in gate templates: query shape, defaults, overrides."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from segue.analysis.bounds import bound_text, bounds
from segue.analysis.providers.prometheus.templates import (
    TEMPLATES,
    resolve_gate,
    template_query,
    with_policy,
)
from segue.analysis.providers.prometheus.templating import TemplateError, render
from segue.api.spec import (
    MSG_LABELS_NEED_TEMPLATE,
    MSG_QUERY_NEEDS_BOUND,
    MSG_QUERY_XOR_TEMPLATE,
    Gate,
)

VALUES = {"version": "v2", "namespace": "shop", "rollout": "checkout", "interval": "30s"}


def rendered(template: str, **labels: str) -> str:
    return render(template_query(template, labels), **VALUES)


def test_error_rate_query():
    assert rendered("error-rate") == (
        '(sum(rate(http_requests_total{app="checkout",version="v2",code=~"5.."}[1m]))'
        " or vector(0))"
        ' / sum(rate(http_requests_total{app="checkout",version="v2"}[1m]))'
    )


def test_success_rate_query():
    assert rendered("success-rate") == (
        '(sum(rate(http_requests_total{app="checkout",version="v2",code!~"5.."}[1m]))'
        " or vector(0))"
        ' / sum(rate(http_requests_total{app="checkout",version="v2"}[1m]))'
    )


def test_latency_query():
    assert rendered("latency") == (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(http_request_duration_seconds_bucket{app="checkout",version="v2"}[1m])))'
    )


def test_throughput_query():
    assert rendered("throughput") == (
        'sum(rate(http_requests_total{app="checkout",version="v2"}[1m]))'
    )


def test_labels_rename_metrics_and_labels():
    q = rendered(
        "error-rate",
        metric="requests_total",
        appLabel="service",
        app="cart",
        versionLabel="track",
        codeLabel="status",
        errorCodes="5..|429",
        namespaceLabel="kubernetes_namespace",
        window="{{ interval }}",
    )
    assert q == (
        '(sum(rate(requests_total{service="cart",track="v2",kubernetes_namespace="shop",'
        'status=~"5..|429"}[30s])) or vector(0))'
        ' / sum(rate(requests_total{service="cart",track="v2",kubernetes_namespace="shop"}[30s]))'
    )


def test_latency_labels():
    q = rendered("latency", histogram="rpc_seconds_bucket", quantile="0.95", window="5m")
    assert q == (
        "histogram_quantile(0.95, sum by (le) "
        '(rate(rpc_seconds_bucket{app="checkout",version="v2"}[5m])))'
    )


def test_app_value_is_escaped():
    q = rendered("throughput", app='a"} or vector(1) #')
    assert 'app="a\\x22} or vector(1) #"' in q


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"metrik": "x"}, "unknown template label metrik"),
        ({"metric": "http-requests"}, "not a metric name"),
        ({"appLabel": "app name"}, "not a label name"),
        ({"window": "1 minute"}, "window"),
        ({"quantile": "99"}, "quantile"),
        ({"quantile": "p99"}, "quantile"),
    ],
)
def test_bad_labels(labels, message):
    with pytest.raises(TemplateError, match=message):
        template_query("latency", labels)


def test_defaults_follow_the_design():
    # bounds: (max, min, maxRatioToLegacy, minRatioToLegacy)
    err = resolve_gate(Gate(name="e", template="error-rate"))
    assert (bounds(err), err.on_failure, err.failure_limit) == (
        (0.05, None, None, None),
        "rollback",
        1,
    )
    lat = resolve_gate(Gate(name="l", template="latency"))
    assert (bounds(lat), lat.on_failure) == ((None, None, 2.0, None), "rollback-graceful")
    tp = resolve_gate(Gate(name="t", template="throughput"))
    assert bounds(tp) == (None, None, None, 0.9)
    assert tp.per_traffic_share and tp.on_failure == "rollback-graceful"
    ok = resolve_gate(Gate(name="s", template="success-rate"))
    assert (bounds(ok), ok.on_failure) == ((None, 0.95, None, None), "rollback-graceful")
    assert set(TEMPLATES) == {"error-rate", "latency", "throughput", "success-rate"}
    # The gate as it runs carries its template's query, placeholders still in.
    assert err.query == template_query("error-rate")


def test_explicit_bounds_replace_the_templates_as_a_whole():
    g = resolve_gate(Gate(name="l", template="latency", max=0.5))
    assert bounds(g) == (0.5, None, None, None)
    g = resolve_gate(Gate(name="e", template="error-rate", max=0.01, on_failure="pause"))
    assert bounds(g) == (0.01, None, None, None) and g.on_failure == "pause"
    g = resolve_gate(Gate(name="e", template="error-rate", failure_limit=4))
    assert g.failure_limit == 4 and g.on_failure == "rollback"


def test_custom_query_defaults():
    g = resolve_gate(Gate(name="c", query='sum(x{v="{{ version }}"})', max=1))
    assert (g.on_failure, g.failure_limit, g.per_traffic_share) == ("rollback", 1, False)
    g = resolve_gate(Gate(name="c", query="sum(x)", max=1, per_traffic_share=True))
    assert g.per_traffic_share


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, MSG_QUERY_XOR_TEMPLATE),
        ({"query": "x", "template": "latency"}, MSG_QUERY_XOR_TEMPLATE),
        ({"template": "latancy"}, "Input should be 'error-rate', 'latency'"),
        ({"query": "sum(x)"}, MSG_QUERY_NEEDS_BOUND),
        ({"query": "sum(x)", "max": 1, "onFailure": "abort"}, "Input should be 'rollback'"),
        ({"query": "sum(x)", "max": 1, "failureLimit": 0}, "greater than or equal to 1"),
        ({"query": "sum(x)", "maxRatioToLegacy": 0}, "greater than 0"),
        ({"query": "sum(x)", "max": 1, "labels": {"app": "x"}}, MSG_LABELS_NEED_TEMPLATE),
        ({"name": "", "query": "sum(x)", "max": 1}, "at least 1 character"),
    ],
)
def test_gates_the_api_refuses_never_reach_resolution(fields: dict[str, Any], message: str):
    with pytest.raises(ValidationError, match=re.escape(message)):
        Gate.model_validate({"name": "g", **fields})


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        (Gate(name="g", query="sum(x)", max=float("nan")), "max must be a finite number"),
        (Gate(name="g", query='x{v="{{ ver }}"}', max=1), "unknown placeholder"),
        (Gate(name="g", template="latency", labels={"bogus": "1"}), "unknown template label"),
    ],
)
def test_misconfigured_gates(gate: Gate, message: str):
    with pytest.raises(TemplateError, match=message):
        resolve_gate(gate)


def test_policy_for_unresolvable_gates():
    # What a gate whose query cannot be built reports: the bound and policy it would run with.
    gate = with_policy(Gate(name="g", template="error-rate", labels={"bogus": "1"}))
    assert (gate.on_failure, gate.failure_limit, bound_text(gate)) == ("rollback", 1, "<= 0.05")
    gate = with_policy(Gate(name="g", query="x", min=3, on_failure="pause"))
    assert (gate.on_failure, gate.failure_limit, bound_text(gate)) == ("pause", 1, ">= 3")


def _bounds(**values: Any) -> Gate:
    return Gate.model_construct(name="g", query="q", **values)


def test_bound_text():
    assert bound_text(_bounds(max=0.05)) == "<= 0.05"
    assert bound_text(_bounds(max_ratio_to_legacy=2)) == "<= 2x legacy"
    per_share = Gate(name="g", query="q", min_ratio_to_legacy=0.9, per_traffic_share=True)
    assert bound_text(per_share) == ">= 0.9x legacy per unit of traffic share"
    assert bound_text(_bounds(max=1, min=0.5, max_ratio_to_legacy=1.5)) == (
        "<= 1 and >= 0.5 and <= 1.5x legacy"
    )
    assert bound_text(_bounds()) == "no bound"
