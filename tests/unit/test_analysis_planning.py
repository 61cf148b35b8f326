"""Gate planning: the one function that rounds, the operator's pre-flight check and
`segue lint` share, and the field it names when a gate cannot run."""

from __future__ import annotations

import pytest

from segue.analysis.providers.base import GateProblem, RoundContext
from segue.analysis.providers.prometheus.labels import TEMPLATE_LABELS
from segue.analysis.providers.prometheus.planning import gate_problems
from segue.analysis.providers.prometheus.templates import DEFAULT_LABELS
from segue.api.spec import Gate

CTX = RoundContext(
    namespace="shop", rollout="checkout", legacy_version="v1", new_version="v2",
    interval="30s", weight=0.0,
)  # fmt: skip


def _template(**labels: str) -> Gate:
    return Gate(name="errors", template="error-rate", labels=labels)


def _one(spec: Gate, ctx: RoundContext = CTX) -> GateProblem:
    (problem,) = gate_problems([spec], ctx)
    return problem


def test_the_api_lists_the_labels_the_templates_take() -> None:
    assert tuple(DEFAULT_LABELS) == TEMPLATE_LABELS


@pytest.mark.parametrize(
    ("labels", "field", "message"),
    [
        ({"colour": "red"}, "colour", "unknown template label colour; known: metric, "),
        ({"metric": "up or vector(1)"}, "metric", "template label metric: 'up or vector(1)' is "),
        ({"histogram": "1x"}, "histogram", "is not a metric name"),
        ({"appLabel": "app-name"}, "appLabel", "'app-name' is not a label name"),
        ({"namespaceLabel": "ns!"}, "namespaceLabel", "is not a label name"),
        ({"window": "30s1m"}, "window", "'30s1m' is not a Prometheus duration"),
        ({"window": "0s"}, "window", "must be longer than zero"),
        ({"window": "\u0661m"}, "window", "is not a Prometheus duration"),
        ({"quantile": "1.5"}, "quantile", "is not a decimal number between 0 and 1"),
        ({"quantile": "5e-1"}, "quantile", "is not a decimal number between 0 and 1"),
        ({"app": "a\u202eb"}, "app", "control character U+202E"),
        ({"app": "{{ tenant }}"}, "app", "unknown placeholder {{ tenant }}"),
        ({"errorCodes": "{{ .Code }}"}, "errorCodes", "unknown placeholder {{ .Code }}"),
    ],
)
def test_a_bad_template_label_is_named(labels: dict[str, str], field: str, message: str) -> None:
    problem = _one(_template(**labels))
    assert problem.loc == ("spec", "analysis", "gates", 0, "labels", field)
    assert message in problem.message


def test_good_labels_resolve() -> None:
    spec = _template(window="{{ interval }}", quantile=".95", namespaceLabel="", app="x")
    assert gate_problems([spec, Gate(name="q", query='up{v="{{ version }}"}', max=1)], CTX) == []


def test_an_unknown_placeholder_in_a_query_names_the_query() -> None:
    spec = Gate(name="q", query='up{x="{{ tenant }}"}', max=1)
    problem = _one(spec)
    assert problem.loc == ("spec", "analysis", "gates", 0, "query")
    assert problem.message.startswith("unknown placeholder {{ tenant }}; known: {{ version }}")


def test_a_value_the_query_cannot_take_names_where_it_comes_from() -> None:
    spec = Gate(name="q", query='rate(up{v="{{ version }}"}[{{ interval }}])', max=1)
    ctx = RoundContext("shop", "checkout", "v1", "v2", "30s1m", 0.0)
    assert _one(spec, ctx).loc == ("spec", "analysis", "interval")
    long_name = RoundContext("shop", "r" * 64, "v1", "v2", "30s", 0.0)
    assert _one(Gate(name="q", query='up{r="{{ rollout }}"}', max=1), long_name).loc == (
        "metadata",
        "name",
    )


def test_a_ratio_bound_on_a_query_without_version_is_named() -> None:
    spec = Gate(name="q", query="sum(up)", max_ratio_to_legacy=2.0)
    problem = _one(spec)
    assert problem.loc == ("spec", "analysis", "gates", 0, "query")
    assert "the same for both versions" in problem.message


def test_every_gate_is_checked_and_reported_by_index() -> None:
    gates = [_template(), _template(colour="x"), Gate(name="q", query="{{ x }}", max=1)]
    assert [p.index for p in gate_problems(gates, CTX)] == [1, 2]
