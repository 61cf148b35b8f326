"""Built-in gate templates: query shape, defaults, overrides."""

from __future__ import annotations

import pytest

from segue.analysis.templates import (
    TEMPLATES,
    Bounds,
    bound_text,
    fallback_bound,
    fallback_failure_limit,
    fallback_severity,
    resolve_gate,
    template_query,
)
from segue.analysis.templating import TemplateError, render
from segue.analysis.types import GateSpec

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
    err = resolve_gate(GateSpec("e", template="error-rate"))
    assert (err.bounds, err.severity, err.failure_limit) == (Bounds(max=0.05), "rollback", 1)
    lat = resolve_gate(GateSpec("l", template="latency"))
    assert (lat.bounds, lat.severity) == (Bounds(max_ratio_to_legacy=2.0), "rollback-graceful")
    tp = resolve_gate(GateSpec("t", template="throughput"))
    assert tp.bounds == Bounds(min_ratio_to_legacy=0.9)
    assert tp.per_traffic_share and tp.severity == "rollback-graceful"
    ok = resolve_gate(GateSpec("s", template="success-rate"))
    assert (ok.bounds, ok.severity) == (Bounds(min=0.95), "rollback-graceful")
    assert set(TEMPLATES) == {"error-rate", "latency", "throughput", "success-rate"}


def test_explicit_bounds_replace_the_templates_as_a_whole():
    g = resolve_gate(GateSpec("l", template="latency", max=0.5))
    assert g.bounds == Bounds(max=0.5)
    g = resolve_gate(GateSpec("e", template="error-rate", max=0.01, on_failure="pause"))
    assert g.bounds == Bounds(max=0.01) and g.severity == "pause"
    g = resolve_gate(GateSpec("e", template="error-rate", failure_limit=4))
    assert g.failure_limit == 4 and g.severity == "rollback"


def test_custom_query_defaults():
    g = resolve_gate(GateSpec("c", query='sum(x{v="{{ version }}"})', max=1))
    assert (g.severity, g.failure_limit, g.per_traffic_share) == ("rollback", 1, False)
    g = resolve_gate(GateSpec("c", query="sum(x)", max=1, per_traffic_share=True))
    assert g.per_traffic_share


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GateSpec("g"), "exactly one of query or template"),
        (GateSpec("g", query="x", template="latency"), "exactly one of query or template"),
        (GateSpec("g", template="latancy"), "unknown gate template 'latancy'"),
        (GateSpec("g", query="sum(x)"), "has no bound"),
        (GateSpec("g", query="sum(x)", max=1, on_failure="abort"), "onFailure 'abort'"),
        (GateSpec("g", query="sum(x)", max=1, failure_limit=0), "failureLimit"),
        (GateSpec("g", query="sum(x)", max_ratio_to_legacy=0), "must be positive"),
        (GateSpec("g", query="sum(x)", max=float("nan")), "finite"),
        (GateSpec("g", query="sum(x)", max=1, labels={"app": "x"}), "labels only apply"),
        (GateSpec("g", query='x{v="{{ ver }}"}', max=1), "unknown placeholder"),
        (GateSpec("", query="sum(x)", max=1), "needs a name"),
    ],
)
def test_misconfigured_gates(spec, message):
    with pytest.raises(TemplateError, match=message):
        resolve_gate(spec)


def test_fallbacks_for_unresolvable_gates():
    spec = GateSpec("g", template="error-rate", labels={"bogus": "1"})
    assert fallback_severity(spec) == "rollback"
    assert fallback_failure_limit(spec) == 1
    assert fallback_bound(spec) == "<= 0.05"
    spec = GateSpec("g", query="x", on_failure="nonsense", failure_limit=-1, min=3)
    assert fallback_severity(spec) == "rollback"
    assert fallback_failure_limit(spec) == 1
    assert fallback_bound(spec) == ">= 3"


def test_bound_text():
    assert bound_text(Bounds(max=0.05)) == "<= 0.05"
    assert bound_text(Bounds(max_ratio_to_legacy=2)) == "<= 2x legacy"
    assert bound_text(Bounds(min_ratio_to_legacy=0.9), per_traffic_share=True) == (
        ">= 0.9x legacy per unit of traffic share"
    )
    assert bound_text(Bounds(max=1, min=0.5, max_ratio_to_legacy=1.5)) == (
        "<= 1 and >= 0.5 and <= 1.5x legacy"
    )
    assert bound_text(Bounds()) == "no bound"
