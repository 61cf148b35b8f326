"""The CRD as the API server enforces it: invalid Rollouts are refused by `kubectl apply`
with messages that name the field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

GOOD: dict[str, Any] = {
    "legacy": {"deployment": "shop-v1"},
    "new": {"deployment": "shop-v2"},
    "traffic": {"replicas": {}},
    "risk": "low",
}


def manifest(name: str, spec: dict[str, Any]) -> str:
    doc = {"apiVersion": "segue.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": name}}
    return yaml.safe_dump({**doc, "spec": spec})


CASES = [
    ("weight-high", {"steps": [{"setWeight": 101}], "risk": None}, "spec.steps[0].setWeight"),
    ("weight-zero", {"steps": [{"setWeight": 0}], "risk": None}, "spec.steps[0].setWeight"),
    ("step-kind", {"steps": [{"setWeight": 5, "pause": {}}], "risk": None}, "spec.steps[0]"),
    (
        "empty-step",
        {"steps": [{}], "risk": None},
        "exactly one of setWeight, setSegment, pause or approval",
    ),
    ("duration", {"steps": [{"pause": {"duration": "5 minutes"}}], "risk": None}, "duration"),
    ("no-router", {"traffic": {}}, "exactly one router"),
    (
        "two-routers",
        {
            "traffic": {
                "replicas": {},
                "gatewayAPI": {"httpRoute": "r", "legacyBackend": "a", "newBackend": "b"},
            }
        },
        "exactly one router",
    ),
    ("no-plan", {"risk": None}, "set risk (low, medium or critical) or steps"),
    ("same", {"new": {"deployment": "shop-v1"}}, "spec.new.deployment must differ"),
    ("risk", {"risk": "extreme"}, "spec.risk"),
]


@pytest.mark.parametrize(("name", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_invalid_rollout_is_refused_naming_the_field(kube, namespace, crds, name, change, expected):
    spec = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    result = kube.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest(name, spec), check=False
    )
    assert result.returncode != 0, f"accepted: {spec}"
    assert expected in result.stderr, result.stderr


def test_valid_rollout_is_accepted_with_printer_columns(kube, namespace, crds):
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("ok", GOOD))
    out = kube.kubectl("get", "-n", namespace, "sgr").stdout
    header = out.splitlines()[0].split()
    assert header[:2] == ["NAME", "PHASE"] and "WEIGHT" in header and "AGE" in header
    assert "ok" in kube.kubectl("get", "-n", namespace, "segue").stdout
