"""The generated CRD: committed copy up to date, structural, and carrying the rules the
schema alone cannot express."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from segue.analysis.providers.prometheus import labels as gate_labels
from segue.analysis.providers.prometheus import settings as prometheus_settings
from segue.api import DURATION_PATTERN, RolloutSpec, spec
from segue.api.crd import CRD_PATH, crd, main, render
from segue.api.duration import SAFE_DURATION_PATTERN, DurationBounds
from segue.traffic.gatewayapi.plugin import MSG_DISTINCT_BACKENDS


def _schema() -> dict[str, Any]:
    root: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def _nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def _walk_keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _walk_keys(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_keys(v)


def _at(path: str) -> dict[str, Any]:
    nodes = dict(_nodes(_schema()))
    return nodes[path]


def test_committed_crd_is_up_to_date() -> None:
    assert CRD_PATH.read_text(encoding="utf-8") == render(), (
        "crds/rollouts.segue.dev.yaml is stale: run `python -m segue.api.crd --write`"
    )


def test_committed_crd_is_plain_yaml() -> None:
    text = CRD_PATH.read_text(encoding="utf-8")
    assert "&id" not in text and "*id" not in text  # no anchors
    assert yaml.safe_load(text) == crd()


def test_main_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == render()


def test_no_refs_combinators_or_titles_anywhere() -> None:
    keys = set(_walk_keys(_schema()))
    for banned in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const"):
        assert banned not in keys, banned


def test_schema_is_structural() -> None:
    for path, node in _nodes(_schema()):
        if path == ".status":
            assert node["x-kubernetes-preserve-unknown-fields"] is True
        else:
            assert "x-kubernetes-preserve-unknown-fields" not in node, path
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, (
            path
        )
        if "additionalProperties" in node:
            assert isinstance(node["additionalProperties"], dict), path
            assert "properties" not in node, path
        if node["type"] == "array":
            assert "items" in node, path
        assert "default" not in node or node["default"] is not None, path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path
        for name in node.get("required", []):
            assert name in node["properties"], (path, name)


def _valid_default(node: dict[str, Any]) -> bool:
    value = node["default"]
    kind = node["type"]
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]
    if "enum" in node:
        ok = ok and value in node["enum"]
    if "pattern" in node:
        ok = ok and re.fullmatch(node["pattern"].strip("^$"), value) is not None
    if "minimum" in node:
        ok = ok and value >= node["minimum"]
    if "maximum" in node:
        ok = ok and value <= node["maximum"]
    return bool(ok)


def test_defaults_are_valid() -> None:
    defaults = [(p, n) for p, n in _nodes(_schema()) if "default" in n]
    assert defaults
    for path, node in defaults:
        assert _valid_default(node), path


def test_list_maps_have_required_keys() -> None:
    for path, node in _nodes(_schema()):
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"].get("required", []), path


def test_lists_are_bounded() -> None:
    assert _at(".spec.steps")["maxItems"] == 64
    assert _at(".spec.analysis.gates")["maxItems"] == 16
    assert _at(".spec.dependsOn")["maxItems"] == 16
    assert _at(".status.history")["maxItems"] == 50
    assert _at(".status.conditions")["maxItems"] == 16
    for path, node in _nodes(_schema()):
        if node["type"] == "array" and path.startswith(".spec"):
            assert "maxItems" in node, path


def test_strings_cel_reads_are_bounded() -> None:
    assert _at(".spec.legacy.deployment")["maxLength"] == 253
    assert _at(".spec.new.deployment")["maxLength"] == 253
    assert _at(".spec.analysis.gates[].query")["maxLength"] == 4096
    assert _at(".spec.analysis.gates[].name")["maxLength"] == 63


def test_plain_schema_rules() -> None:
    weight = _at(".spec.steps[].setWeight")
    assert (weight["minimum"], weight["maximum"]) == (1, 100)
    assert _at(".spec.risk")["enum"] == ["low", "medium", "critical"]
    assert _at(".spec.rollback.mode")["enum"] == ["immediate", "graceful"]
    assert _at(".spec.analysis.noData")["enum"] == ["pause", "fail"]
    assert _at(".spec.analysis.gates[].onFailure")["enum"] == [
        "rollback",
        "rollback-graceful",
        "pause",
    ]
    assert _at(".spec.analysis.gates[].template")["enum"] == [
        "error-rate",
        "latency",
        "throughput",
        "success-rate",
    ]
    for path in (".spec.hold", ".spec.steps[].pause.duration", ".spec.analysis.interval"):
        assert _at(path)["pattern"] == r"^([0-9]+(ms|s|m|h))+$", path
    assert _at(".spec.risk")["nullable"] is True
    assert _at(".status.stepStartedAt")["format"] == "date-time"
    assert _at(".spec.analysis.gates[].labels")["additionalProperties"] == {
        "type": "string",
        "maxLength": 1024,
    }


def _rules(path: str) -> dict[str, str]:
    return {r["rule"]: r["message"] for r in _at(path)["x-kubernetes-validations"]}


def test_cel_rules() -> None:
    top = _rules(".spec")
    assert top["has(self.risk) || has(self.steps)"] == spec.MSG_RISK_OR_STEPS
    assert top["self.legacy.deployment != self.new.deployment"] == spec.MSG_DISTINCT
    assert spec.MSG_HOLD_WITH_STEPS in top.values()
    assert list(_rules(".spec.traffic").values()) == [spec.MSG_ONE_ROUTER]
    step_rules = _rules(".spec.steps[]")
    assert step_rules == {
        "(has(self.setWeight) ? 1 : 0) + (has(self.setSegment) ? 1 : 0)"
        " + (has(self.pause) ? 1 : 0) + (has(self.approval) ? 1 : 0) == 1": spec.MSG_ONE_STEP_KIND
    }
    # setSegment only with a router that can route a segment, named at spec.steps.
    segment_rules = [
        r
        for r in _at(".spec")["x-kubernetes-validations"]
        if r["message"] == spec.MSG_SEGMENT_ROUTER
    ]
    assert segment_rules == [
        {
            "rule": "!has(self.traffic.replicas) || !has(self.steps) || "
            "!self.steps.exists(s, has(s.setSegment))",
            "message": spec.MSG_SEGMENT_ROUTER,
            "fieldPath": ".steps",
        }
    ]
    gate_rules = _rules(".spec.analysis.gates[]")
    assert gate_rules["has(self.query) != has(self.template)"] == spec.MSG_QUERY_XOR_TEMPLATE
    assert spec.MSG_QUERY_NEEDS_BOUND in gate_rules.values()
    for path, node in _nodes(_schema()):
        for rule in node.get("x-kubernetes-validations", []):
            assert {"rule", "message"} <= set(rule), path
            assert set(rule) <= {"rule", "message", "messageExpression", "fieldPath"}, path
            # Every field a rule names exists where the rule is attached.
            for field in re.findall(r"self\.(\w+)", rule["rule"]):
                assert field in node["properties"], (path, field)
            if "fieldPath" in rule:
                # A field of the object, or a key of one of its maps (.labels.metric).
                first, _, key = rule["fieldPath"].removeprefix(".").partition(".")
                assert first in node["properties"], path
                assert not key or "additionalProperties" in node["properties"][first], path


def test_gate_label_rules_point_at_the_label() -> None:
    rules = {r["fieldPath"]: r for r in _at(".spec.analysis.gates[]")["x-kubernetes-validations"]
             if "fieldPath" in r}  # fmt: skip
    assert rules[".labels"]["message"] == gate_labels.MSG_UNKNOWN_LABEL
    for key in gate_labels.TEMPLATE_LABELS:
        if key in ("versionLabel", "appLabel", "codeLabel", "namespaceLabel"):
            assert rules[f".labels.{key}"]["message"].endswith(gate_labels.MSG_LABEL_NAME)
        elif key in ("metric", "histogram"):
            assert rules[f".labels.{key}"]["message"].endswith(gate_labels.MSG_METRIC_NAME)
        else:
            assert f".labels.{key}" in rules, key


def test_backends_must_differ_in_the_crd() -> None:
    rules = _at(".spec.traffic.gatewayAPI")["x-kubernetes-validations"]
    assert rules == [
        {
            "rule": "self.legacyBackend != self.newBackend",
            "message": MSG_DISTINCT_BACKENDS,
            "fieldPath": ".newBackend",
        }
    ]


def test_cel_messages_match_pydantic_messages() -> None:
    # The same rule fails the same way in `segue lint` and at the API server.
    crd_messages = {
        r["message"] for _, n in _nodes(_schema()) for r in n.get("x-kubernetes-validations", [])
    }
    for module in (spec, prometheus_settings):
        for name in dir(module):
            if name.startswith("MSG_") and name not in (
                "MSG_UNIQUE_GATES",
                "MSG_UNIQUE_DEPENDENCIES",
                "MSG_PROVIDER_ADDRESS",  # a MetricProvider's (test_api_provider)
            ):
                assert getattr(module, name) in crd_messages, (module.__name__, name)


def test_names_printer_columns_and_status() -> None:
    doc = crd()
    assert doc["metadata"]["name"] == "rollouts.segue.dev"
    s = doc["spec"]
    assert s["group"] == "segue.dev"
    assert s["scope"] == "Namespaced"
    assert s["names"]["kind"] == "Rollout"
    assert s["names"]["plural"] == "rollouts"
    assert s["names"]["shortNames"] == ["sgr"]
    assert s["names"]["categories"] == ["segue"]
    version = s["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Step", "Weight", "Message", "Age"]
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Step"]["jsonPath"] == ".status.step"
    assert columns["Weight"]["jsonPath"] == ".status.weight"
    assert columns["Message"]["priority"] == 1
    assert columns["Age"]["type"] == "date"


def test_spec_schema_covers_every_spec_field() -> None:
    properties = _at(".spec")["properties"]
    aliases = {f.alias or n for n, f in RolloutSpec.model_fields.items()}
    assert set(properties) == aliases


# Where each bounded duration lives: (object holding it, field, bounds).
DURATION_RULES = [
    (".spec", "hold", spec.HOLD_BOUNDS),
    (".spec", "bakeTime", spec.BAKE_BOUNDS),
    (".spec.steps[].pause", "duration", spec.PAUSE_BOUNDS),
    (".spec.analysis", "interval", spec.INTERVAL_BOUNDS),
    (".spec.analysis", "unreachableLimit", spec.UNREACHABLE_BOUNDS),
    (".spec.analysis.prometheus", "timeout", prometheus_settings.TIMEOUT_BOUNDS),
    (".spec.rollback", "duration", spec.ROLLBACK_BOUNDS),
]


@pytest.mark.parametrize(("path", "field", "bounds"), DURATION_RULES)
def test_duration_bounds_are_cel_rules_with_field_path(
    path: str, field: str, bounds: DurationBounds
) -> None:
    rules = [r for r in _at(path)["x-kubernetes-validations"] if r.get("fieldPath")]
    rule = next(r for r in rules if r["fieldPath"] == f".{field}")
    assert rule["message"] == bounds.message
    assert rule["message"].startswith(f"{path.replace('[]', '[*]').lstrip('.')}.{field}: ")
    assert rule["messageExpression"] == f"'{bounds.message}, got ' + self.{field}"
    text = rule["rule"]
    assert text.startswith(f"!has(self.{field}) || ")
    assert f"duration(self.{field}) >= duration('{bounds.low}')" in text
    assert f"duration(self.{field}) <= duration('{bounds.high}')" in text
    # duration() is only reached on text the safe pattern admits, so it cannot overflow.
    guard = f"self.{field}.matches('{SAFE_DURATION_PATTERN}') && duration("
    assert text.index(guard) < text.index(f"duration(self.{field})")
    node = _at(f"{path}.{field}")
    assert node["maxLength"] == 32 and node["pattern"] == DURATION_PATTERN


def test_duration_bounds() -> None:
    def span(b: DurationBounds) -> tuple[str, str]:
        return (b.low, b.high)

    assert span(spec.INTERVAL_BOUNDS) == ("1s", "1h")
    assert span(spec.HOLD_BOUNDS) == span(spec.PAUSE_BOUNDS) == ("1ms", "720h")
    assert span(prometheus_settings.TIMEOUT_BOUNDS) == ("100ms", "30s")
    assert span(spec.UNREACHABLE_BOUNDS) == ("0s", "24h")
    assert span(spec.ROLLBACK_BOUNDS) == ("1s", "24h")
    assert span(spec.BAKE_BOUNDS) == ("0s", "720h")


def test_every_duration_field_has_a_bound_rule() -> None:
    covered = {f"{path}.{field}" for path, field, _ in DURATION_RULES}
    durations = {p for p, n in _nodes(_schema()) if n.get("pattern") == DURATION_PATTERN}
    assert durations == covered


def test_kubectl_explain_describes_every_spec_field() -> None:
    """Every field under spec has a description, so `kubectl explain rollout.spec...`
    never says "no description"."""
    missing = []
    for path, node in _nodes(_at(".spec")):
        for name, child in (node.get("properties") or {}).items():
            if not child.get("description"):
                missing.append(f"{path}.{name}")
    assert missing == []
