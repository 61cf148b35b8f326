"""Spec models: example manifests parse and round-trip; invalid ones fail with errors that
name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from segue.api import RolloutSpec
from segue.traffic.gatewayapi.plugin import MSG_DISTINCT_BACKENDS, GatewayAPISettings
from tests.unit.conftest import spec_dict

# Manifests a user would apply; each must parse.
VALID_SPECS: list[dict[str, Any]] = [
    # The smallest: a preset and the replicas router.
    {
        "legacy": {"deployment": "checkout-v1"},
        "new": {"deployment": "checkout-v2"},
        "traffic": {"replicas": {}},
        "risk": "low",
    },
    # The design page's example.
    {
        "legacy": {"deployment": "checkout-v1"},
        "new": {"deployment": "checkout-v2", "version": "v2"},
        "traffic": {
            "gatewayAPI": {
                "httpRoute": "checkout",
                "legacyBackend": "checkout-v1",
                "newBackend": "checkout-v2",
            }
        },
        "risk": "medium",
        "steps": [
            {"setWeight": 5},
            {"pause": {"duration": "10m"}},
            {"approval": {}},
            {"setWeight": 50},
        ],
        "analysis": {
            "interval": "30s",
            "prometheus": {"address": "http://prometheus.monitoring:9090"},
            "gates": [
                {
                    "name": "error-rate",
                    "query": 'sum(rate(x{version="{{ version }}",code=~"5.."}[1m]))',
                    "max": 0.05,
                    "onFailure": "rollback",
                },
                {
                    "name": "latency-p99",
                    "query": "histogram_quantile(0.99, x)",
                    "maxRatioToLegacy": 2.0,
                    "failureLimit": 3,
                    "onFailure": "rollback-graceful",
                },
            ],
            "noData": "pause",
        },
        "rollback": {"mode": "graceful", "duration": "5m"},
        "dependsOn": [{"name": "catalog"}],
    },
    # Templates, secrets, a demo hold.
    {
        "legacy": {"deployment": "api-old"},
        "new": {"deployment": "api-new"},
        "traffic": {"replicas": {"service": "api"}},
        "risk": "critical",
        "hold": "5s",
        "analysis": {
            "prometheus": {"secretRef": {"name": "prom-creds"}, "timeout": "2s"},
            "unreachableLimit": "2m",
            "noData": "fail",
            "gates": [
                {"name": "errors", "template": "error-rate", "labels": {"app": "api"}},
                {"name": "latency", "template": "latency", "onFailure": "pause"},
                {"name": "rps", "template": "throughput", "minRatioToLegacy": 0.8},
                {"name": "ok", "template": "success-rate"},
            ],
        },
    },
    # Explicit steps only, untimed pause.
    {
        "legacy": {"deployment": "a"},
        "new": {"deployment": "b"},
        "traffic": {"replicas": {}},
        "steps": [{"setWeight": 1}, {"pause": {}}, {"setWeight": 100}],
    },
]


@pytest.mark.parametrize("raw", VALID_SPECS)
def test_valid_specs_round_trip(raw: dict[str, Any]) -> None:
    spec = RolloutSpec.model_validate(raw)
    wire = spec.to_wire()
    assert RolloutSpec.model_validate(wire) == spec
    # What the user wrote comes back as written: defaults are added, nothing is renamed.
    assert _contains(wire, raw)


def _contains(outer: Any, inner: Any) -> bool:
    if isinstance(inner, dict):
        return isinstance(outer, dict) and all(
            k in outer and _contains(outer[k], v) for k, v in inner.items()
        )
    if isinstance(inner, list):
        return (
            isinstance(outer, list)
            and len(outer) == len(inner)
            and all(_contains(o, i) for o, i in zip(outer, inner, strict=True))
        )
    return bool(outer == inner)


def test_defaults_are_filled() -> None:
    spec = RolloutSpec.model_validate(VALID_SPECS[1])
    assert spec.analysis is not None
    assert spec.analysis.unreachable_limit == "1m"
    assert spec.analysis.no_data == "pause"
    assert spec.analysis.gates[0].failure_limit is None  # the analysis package decides
    gateway = spec.traffic.settings()
    assert isinstance(gateway, GatewayAPISettings)
    assert gateway.rule_index == 0
    assert spec.effective_rollback().mode == "graceful"
    assert RolloutSpec.model_validate(VALID_SPECS[0]).effective_rollback().duration == "5m"


def test_effective_version_defaults_to_the_deployment() -> None:
    spec = RolloutSpec.model_validate(VALID_SPECS[1])
    assert spec.legacy.effective_version() == "checkout-v1"
    assert spec.new.effective_version() == "v2"


def test_python_names_are_accepted_too() -> None:
    spec = RolloutSpec.model_validate(
        spec_dict(traffic={"replicas": {}}, risk=None, steps=[{"set_weight": 10}])
    )
    assert spec.steps is not None
    assert spec.steps[0].set_weight == 10


def _errors(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        RolloutSpec.model_validate(raw)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


def _assert_error(raw: dict[str, Any], where: str, text: str) -> None:
    errors = _errors(raw)
    assert any(loc == where and text in msg for loc, msg in errors), errors


def test_needs_risk_or_steps() -> None:
    _assert_error(spec_dict(risk=None), "", "spec: set risk (low, medium or critical) or steps")


def test_new_must_differ_from_legacy() -> None:
    raw = spec_dict(new={"deployment": "checkout-v1"})
    _assert_error(raw, "", "spec.new.deployment must differ from spec.legacy.deployment")


def test_exactly_one_router() -> None:
    both = spec_dict(
        traffic={
            "replicas": {},
            "gatewayAPI": {"httpRoute": "r", "legacyBackend": "a", "newBackend": "b"},
        }
    )
    _assert_error(both, "traffic", "set exactly one router")
    _assert_error(spec_dict(traffic={}), "traffic", "set exactly one router")


def test_step_needs_exactly_one_kind() -> None:
    raw = spec_dict(risk=None, steps=[{"setWeight": 10, "pause": {}}])
    _assert_error(raw, "steps.0", "exactly one of setWeight, setSegment, pause or approval")
    _assert_error(spec_dict(risk=None, steps=[{}]), "steps.0", "exactly one of setWeight")


@pytest.mark.parametrize("weight", [0, 101, -5])
def test_set_weight_range(weight: int) -> None:
    errors = _errors(spec_dict(risk=None, steps=[{"setWeight": weight}]))
    assert any(loc == "steps.0.setWeight" for loc, _ in errors), errors


def test_bad_duration_names_the_field() -> None:
    errors = _errors(spec_dict(steps=[{"pause": {"duration": "10 minutes"}}]))
    assert any(loc == "steps.0.pause.duration" for loc, _ in errors), errors


def test_hold_with_explicit_steps_is_rejected() -> None:
    _assert_error(spec_dict(hold="5s", steps=[{"setWeight": 10}]), "", "spec.hold only applies")


def test_unknown_field_is_an_error() -> None:
    errors = _errors(spec_dict(risk=None, steps=[{"setweight": 10}]))
    assert any(loc == "steps.0.setweight" for loc, _ in errors), errors


def test_unknown_risk() -> None:
    errors = _errors(spec_dict(risk="extreme"))
    assert any(loc == "risk" for loc, _ in errors), errors


def test_gate_rules() -> None:
    def with_gate(**gate: Any) -> dict[str, Any]:
        return spec_dict(analysis={"gates": [{"name": "g", **gate}]})

    _assert_error(with_gate(), "analysis.gates.0", "exactly one of query or template")
    both = with_gate(query="q", template="latency", max=1)
    _assert_error(both, "analysis.gates.0", "exactly one of query or template")
    _assert_error(with_gate(query="q"), "analysis.gates.0", "needs a bound")
    labels = with_gate(query="q", max=1, labels={"app": "x"})
    _assert_error(labels, "analysis.gates.0", "labels only apply to a template")
    errors = _errors(with_gate(template="latency", failureLimit=0))
    assert any(loc == "analysis.gates.0.failureLimit" for loc, _ in errors), errors
    errors = _errors(with_gate(template="nope"))
    assert any(loc == "analysis.gates.0.template" for loc, _ in errors), errors
    errors = _errors(with_gate(template="latency", onFailure="explode"))
    assert any(loc == "analysis.gates.0.onFailure" for loc, _ in errors), errors


def test_gate_names_are_unique_and_label_like() -> None:
    gate = {"name": "g", "template": "latency"}
    _assert_error(spec_dict(analysis={"gates": [gate, gate]}), "analysis", "must be unique")
    errors = _errors(spec_dict(analysis={"gates": [{**gate, "name": "Not_A_Label"}]}))
    assert any(loc == "analysis.gates.0.name" for loc, _ in errors), errors


def test_dependencies_are_unique() -> None:
    raw = spec_dict(dependsOn=[{"name": "a"}, {"name": "a"}])
    _assert_error(raw, "", "spec.dependsOn: names must be unique")


def test_limits() -> None:
    errors = _errors(spec_dict(risk=None, steps=[{"setWeight": 10}] * 65))
    assert any(loc == "steps" for loc, _ in errors), errors
    errors = _errors(spec_dict(analysis={"gates": [{"name": "g", "query": "x" * 4097, "max": 1}]}))
    assert any(loc == "analysis.gates.0.query" for loc, _ in errors), errors


def test_gateway_backends_must_differ() -> None:
    raw = spec_dict()
    raw["traffic"]["gatewayAPI"]["newBackend"] = "checkout-v1"
    with pytest.raises(ValidationError) as e:
        RolloutSpec.model_validate(raw)
    (err,) = e.value.errors()
    assert err["loc"] == ("traffic", "gatewayAPI", "newBackend")
    assert MSG_DISTINCT_BACKENDS in err["msg"]
