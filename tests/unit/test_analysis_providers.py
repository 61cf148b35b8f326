"""Metric providers as plugins: the API assembled from the catalog, the operator's flags
reaching each provider's runtime, which provider plans a Rollout's gates, and imports that
work in any order."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from segue.analysis.providers import catalog, registry
from segue.analysis.providers.base import GateProblem, RoundContext
from segue.analysis.providers.prometheus.provider import PROMETHEUS
from segue.analysis.providers.prometheus.runtime import PrometheusRuntime
from segue.analysis.providers.prometheus.settings import Prometheus, PrometheusEndpoint
from segue.api.crd import crd, provider_crd
from segue.api.provider import MetricProviderSpec
from segue.api.spec import Analysis, Gate
from segue.controller.gates import GateRunner
from segue.controller.main import parse_args
from segue.controller.resolution import unresolvable_gates
from tests.unit.conftest import analysis, make_spec

OPERATOR = Path(__file__).resolve().parents[2] / "operator"


def test_the_analysis_section_has_one_section_per_provider_after_provider_ref() -> None:
    fields = list(Analysis.model_fields)
    at = fields.index("provider_ref") + 1
    assert fields[at : at + len(catalog.KEYS)] == list(catalog.KEYS)
    assert Analysis.model_fields["prometheus"].annotation == Prometheus | None
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    properties = schema["properties"]["spec"]["properties"]["analysis"]["properties"]
    assert list(properties)[:3] == ["interval", "providerRef", "prometheus"]
    parsed = Analysis.model_validate({"prometheus": {"timeout": "2s"}, "gates": [_GATE]})
    found = catalog.inline_section(parsed)
    assert found is not None and found[0] is PROMETHEUS
    assert isinstance(found[1], Prometheus) and found[1].timeout == "2s"
    assert catalog.inline_section(Analysis.model_validate({"gates": [_GATE]})) is None


def test_a_metric_provider_sets_exactly_its_providers_section() -> None:
    assert list(MetricProviderSpec.model_fields) == list(catalog.KEYS)
    spec = MetricProviderSpec.model_validate({"prometheus": {"address": "http://p:9090"}})
    provider, section = catalog.endpoint_section(spec)
    assert provider is PROMETHEUS and isinstance(section, PrometheusEndpoint)
    with pytest.raises(ValidationError, match="prometheus\n  Field required"):
        MetricProviderSpec.model_validate({})
    root = provider_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert root["properties"]["spec"]["required"] == ["prometheus"]


def test_gate_templates_and_their_label_rules_come_from_the_providers() -> None:
    assert PROMETHEUS.templates == catalog.TEMPLATE_NAMES
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    gate = schema["properties"]["spec"]["properties"]["analysis"]["properties"]["gates"]["items"]
    assert gate["properties"]["template"]["enum"] == list(PROMETHEUS.templates)
    for rule in PROMETHEUS.gate_rules:
        assert rule in gate["x-kubernetes-validations"]
    with pytest.raises(ValidationError, match="Input should be 'error-rate', 'latency'"):
        Gate.model_validate({"name": "g", "template": "p99"})


def test_the_operators_flags_reach_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGUE_PROMETHEUS_ADDRESS", raising=False)
    monkeypatch.delenv("SEGUE_ALLOW_PROMETHEUS_ADDRESSES", raising=False)
    args = parse_args(
        [
            "--prometheus-address",
            "http://prom.monitoring:9090",
            "--allow-prometheus-address",
            "https://team.example:9090",
        ]
    )
    (runtime,) = registry.configured(args)
    assert isinstance(runtime, PrometheusRuntime)
    assert runtime.default_address == "http://prom.monitoring:9090"
    assert runtime.policy.allows("https://team.example:9090")
    assert runtime.policy.allows("http://prom.monitoring:9090")  # the default, always
    assert not runtime.policy.allows("http://other:9090")
    assert runtime.describe() == [
        "Rollouts may name these Prometheus addresses: https://team.example:9090"
    ]
    # The environment, as the chart sets it.
    monkeypatch.setenv("SEGUE_PROMETHEUS_ADDRESS", "http://env:9090")
    monkeypatch.setenv("SEGUE_ALLOW_PROMETHEUS_ADDRESSES", "http://a:9090, http://b:9090")
    (runtime,) = registry.configured(parse_args([]))
    assert isinstance(runtime, PrometheusRuntime)
    assert runtime.default_address == "http://env:9090"
    assert runtime.allowed == ("http://a:9090", "http://b:9090")


_GATE = {"name": "errors", "template": "error-rate"}


def _planned_by(marker: str) -> Any:
    """The Prometheus entry with a plan that reports every gate as ``marker``: shows which
    provider planned the gates."""

    def plan(gates: Sequence[Gate], ctx: RoundContext) -> list[GateProblem]:
        return [GateProblem(i, g.name, ("query",), marker) for i, g in enumerate(gates)]

    return dataclasses.replace(PROMETHEUS, plan=plan)


def test_the_given_provider_plans_the_gates() -> None:
    spec = make_spec(analysis=analysis(_GATE))
    assert unresolvable_gates(spec, "shop", "checkout") == []  # the default provider
    (problem,) = unresolvable_gates(spec, "shop", "checkout", _planned_by("other"))
    assert problem.message == "other"


def test_the_runner_names_the_provider_of_a_metric_provider() -> None:
    shared = MetricProviderSpec.model_validate({"prometheus": {"address": "http://p:9090"}})
    runner = GateRunner(
        None,  # type: ignore[arg-type]  # no Secret is read here
        metric_providers={"shared": shared}.get,
    )
    named = make_spec(analysis=analysis(_GATE, providerRef={"name": "shared"}))
    missing = make_spec(analysis=analysis(_GATE, providerRef={"name": "gone"}))
    inline = make_spec(analysis=analysis(_GATE, prometheus={"timeout": "1s"}))
    plain = make_spec(analysis=analysis(_GATE))
    assert {runner.provider(s).key for s in (named, missing, inline, plain)} == {"prometheus"}
    assert runner.provider(missing) is catalog.DEFAULT


@pytest.mark.parametrize(
    "module",
    [
        "segue.analysis.providers.prometheus.templates",
        "segue.analysis.providers.prometheus.settings",
        "segue.analysis.providers.catalog",
        "segue.analysis.providers.prometheus.runtime",
        "segue.api.provider",
        "segue.api",
    ],
)
def test_any_module_may_be_imported_first(module: str) -> None:
    # The API assembles itself from the catalog, whose models build on the API's base types.
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}; import segue.api.spec as s; s.RolloutSpec"],
        env={"PYTHONPATH": str(OPERATOR)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
