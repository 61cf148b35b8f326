"""MetricProvider and provider addresses: the pydantic models, the CRD rules that mirror
them, the committed CRD files and the allow-list of inline addresses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from segue.analysis.providers.prometheus.addresses import AddressPolicy, normalise
from segue.analysis.providers.prometheus.settings import MSG_ADDRESS, MSG_PROVIDER_ADDRESS
from segue.api.address import ADDRESS_PATTERN
from segue.api.crd import PROVIDER_CRD_PATH, provider_crd, render
from segue.api.provider import MetricProviderSpec
from segue.api.spec import MSG_PROVIDER_OR_INLINE, RolloutSpec
from tests.unit.conftest import analysis, spec_dict

CHART_CRDS = Path(__file__).resolve().parents[2] / "charts" / "segue" / "crds"

GOOD = [
    "http://prometheus.monitoring:9090",
    "https://prometheus.monitoring.svc.cluster.local:9090/",
    "https://thanos.example.com/prometheus",
    "http://[::1]:9090",
    "http://10.0.0.7:9090",
]
BAD = [
    "http://user:secret@prometheus:9090",
    "http://prometheus:9090@evil.example",
    "http://prometheus:9090/?x=1",
    "http://prometheus:9090/api/v1/query?query=up",
    "http://prometheus:9090/#frag",
    "ftp://prometheus:9090",
    "file:///etc/passwd",
    "prometheus:9090",
    "http://",
    "http:// prometheus:9090",
    "HTTP://prometheus:9090",
]


def _rollout(prometheus: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body = analysis(**extra) if prometheus is None else analysis(prometheus=prometheus, **extra)
    return spec_dict(analysis=body)


@pytest.mark.parametrize("address", GOOD)
def test_plain_base_urls_are_accepted(address: str) -> None:
    RolloutSpec.model_validate(_rollout({"address": address}))
    MetricProviderSpec.model_validate({"prometheus": {"address": address}})
    assert re.fullmatch(ADDRESS_PATTERN, address)


@pytest.mark.parametrize("address", BAD)
def test_user_info_query_fragment_and_other_schemes_are_refused(address: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(MSG_ADDRESS)):
        RolloutSpec.model_validate(_rollout({"address": address}))
    with pytest.raises(ValidationError, match=re.escape(MSG_PROVIDER_ADDRESS)):
        MetricProviderSpec.model_validate({"prometheus": {"address": address}})
    assert not re.fullmatch(ADDRESS_PATTERN, address)


def test_provider_ref_and_inline_prometheus_are_exclusive() -> None:
    RolloutSpec.model_validate(_rollout(providerRef={"name": "shared"}))
    with pytest.raises(ValidationError, match=re.escape(MSG_PROVIDER_OR_INLINE)):
        RolloutSpec.model_validate(
            _rollout({"address": "http://prom:9090"}, providerRef={"name": "shared"})
        )


def _rules(node: dict[str, Any]) -> list[dict[str, str]]:
    rules: list[dict[str, str]] = node.get("x-kubernetes-validations", [])
    return rules


def test_the_crds_carry_the_same_rules_with_a_field_path() -> None:
    from segue.api.crd import crd

    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    an = spec["properties"]["analysis"]
    assert {
        "rule": "!has(self.providerRef) || !has(self.prometheus)",
        "message": MSG_PROVIDER_OR_INLINE,
        "fieldPath": ".providerRef",
    } in _rules(an)
    prom = an["properties"]["prometheus"]
    (address,) = [r for r in _rules(prom) if r.get("fieldPath") == ".address"]
    assert address["message"] == MSG_ADDRESS and ADDRESS_PATTERN in address["rule"]

    root = provider_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    endpoint = root["properties"]["spec"]["properties"]["prometheus"]
    (address,) = [r for r in _rules(endpoint) if r.get("fieldPath") == ".address"]
    assert address["message"] == MSG_PROVIDER_ADDRESS and ADDRESS_PATTERN in address["rule"]


def test_the_metric_provider_crd_is_cluster_scoped_with_useful_columns() -> None:
    doc = provider_crd()
    assert doc["spec"]["scope"] == "Cluster"
    columns = {
        c["name"]: c["jsonPath"] for c in doc["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns["Address"] == ".spec.prometheus.address"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_committed_provider_crd_and_chart_copy_are_up_to_date() -> None:
    text = PROVIDER_CRD_PATH.read_text(encoding="utf-8")
    assert text == render("metricproviders"), f"{PROVIDER_CRD_PATH.name} is stale: run `make crds`"
    assert yaml.safe_load(text) == provider_crd()
    assert (CHART_CRDS / PROVIDER_CRD_PATH.name).read_bytes() == PROVIDER_CRD_PATH.read_bytes()


@pytest.mark.parametrize(
    ("address", "canonical"),
    [
        ("http://Prom.Monitoring:80/", "http://prom.monitoring"),
        ("https://prom:443/x/", "https://prom/x"),
        ("https://prom:9090", "https://prom:9090"),
        ("http://[::1]:9090", "http://[::1]:9090"),
        ("http://u@prom:9090", None),
        ("http://prom:9090?x", None),
        ("http://prom:9090#x", None),
        ("http://prom:notaport", None),
        ("gopher://prom", None),
    ],
)
def test_addresses_are_compared_normalised(address: str, canonical: str | None) -> None:
    assert normalise(address) == canonical


def test_the_policy_allows_exactly_its_addresses() -> None:
    policy = AddressPolicy.of(["http://prometheus.monitoring:9090/", "", "http://u@x"])
    assert policy.allows("http://PROMETHEUS.monitoring:9090")
    assert not policy.allows("http://prometheus.monitoring:9091")
    assert not policy.allows("http://prometheus.monitoring:9090/other")
    assert not policy.allows("http://u@x")
    assert "spec.analysis.prometheus.address" in policy.refusal("http://evil")


def test_lint_checks_metric_providers_too() -> None:
    from segue.cli.lint import lint_document

    doc = {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "MetricProvider",
        "metadata": {"name": "shared"},
        "spec": {"prometheus": {"address": "http://user:pw@prom:9090"}},
    }
    (problem,) = lint_document("p.yaml", 0, doc, None)
    assert problem.path == "spec.prometheus.address"
    assert MSG_PROVIDER_ADDRESS.split(": ", 1)[1] in problem.message
    doc["spec"] = {"prometheus": {"address": "http://prom:9090"}}
    assert lint_document("p.yaml", 0, doc, None) == []
