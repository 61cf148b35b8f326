"""The router catalog is the one list: spec.traffic, the chart's RBAC rules and allowed
routers, and the operator's builders all follow it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from segue.api.routing import RouterSettings
from segue.api.spec import MSG_ONE_ROUTER, Traffic
from segue.traffic import chart
from segue.traffic.catalog import ROUTERS
from segue.traffic.registry import builder, check_routers

ROOT = Path(__file__).resolve().parents[2]


def test_every_router_is_a_field_of_spec_traffic_with_a_description() -> None:
    fields = {f.alias: f for f in Traffic.model_fields.values()}
    assert list(fields) == [p.key for p in ROUTERS]
    for p in ROUTERS:
        assert fields[p.key].description == p.description
        assert issubclass(p.settings, RouterSettings)


def test_exactly_one_router_names_every_router() -> None:
    for p in ROUTERS:
        assert p.key in MSG_ONE_ROUTER
    with pytest.raises(ValidationError, match="set exactly one router"):
        Traffic.model_validate({})
    two = {
        "replicas": {},
        "gatewayAPI": {"httpRoute": "r", "legacyBackend": "a", "newBackend": "b"},
    }
    with pytest.raises(ValidationError, match="set exactly one router"):
        Traffic.model_validate(two)


def test_every_router_has_a_builder() -> None:
    for p in ROUTERS:
        assert callable(builder(p.key))


def test_the_chart_template_is_generated_from_the_catalog() -> None:
    assert (ROOT / chart.TEMPLATE).read_text() == chart.render()
    for p in ROUTERS:
        assert f'define "segue.routerRules.{p.key}"' in chart.render()


def test_the_chart_schema_allows_exactly_the_catalog_routers() -> None:
    schema = json.loads((ROOT / "charts/segue/values.schema.json").read_text())
    assert schema["properties"]["routers"]["items"]["enum"] == chart.router_keys()


def test_unknown_routers_are_refused_by_name() -> None:
    assert check_routers(["replicas", "replicas"]) == ["replicas"]
    with pytest.raises(ValueError, match=r"unknown router.*linkerd"):
        check_routers(["gatewayAPI", "linkerd"])


def test_make_crds_writes_the_catalog_routers_into_the_chart_schema() -> None:
    text = (ROOT / "charts/segue/values.schema.json").read_text()
    stale = text.replace(json.dumps(chart.router_keys()), '["gatewayAPI"]')
    assert stale != text
    assert chart.with_router_keys(stale) == text


def test_every_router_names_its_routing_object() -> None:
    """RouterSettings.routing_object is abstract: messages about a missing object call it,
    so every router in the catalog overrides it."""
    for p in ROUTERS:
        assert p.settings.routing_object is not RouterSettings.routing_object, p.key
