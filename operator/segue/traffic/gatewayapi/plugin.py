"""The Gateway API router's settings, watched kind, permissions and test CRDs."""

from __future__ import annotations

from typing import ClassVar, Final

from pydantic import Field, ValidationInfo, field_validator

from segue import MANAGED_LABEL
from segue.api.base import ObjectName, cel_rules
from segue.api.routing import RouterSettings
from segue.traffic.plugin import (
    CRDSource,
    Json,
    Permission,
    RouterPlugin,
    WatchedKind,
    metadata_summary,
)

GROUP: Final = "gateway.networking.k8s.io"
VERSION: Final = "v1"
PLURAL: Final = "httproutes"
KIND: Final = "HTTPRoute"
GATEWAY_API_VERSION: Final = "v1.6.3"

MSG_DISTINCT_BACKENDS: Final = (
    "spec.traffic.gatewayAPI.newBackend: must differ from legacyBackend "
    "(each version needs a backendRef of its own in the rule)"
)


class GatewayAPISettings(RouterSettings):
    """Weights on the backendRefs of a Gateway API HTTPRoute rule; a segment is a rule of
    Segue's own, inserted before it, matching the segment's header values."""

    segments: ClassVar[bool] = True
    model_config = cel_rules(
        {
            "rule": "self.legacyBackend != self.newBackend",
            "message": MSG_DISTINCT_BACKENDS,
            "fieldPath": ".newBackend",
        }
    )

    http_route: ObjectName = Field(description="Name of the HTTPRoute in the same namespace.")
    legacy_backend: ObjectName = Field(description="Service of the legacy version in the rule.")
    new_backend: ObjectName = Field(description="Service of the new version in the rule.")
    rule_index: int = Field(0, ge=0, le=63, description="Index of the rule in spec.rules.")

    @field_validator("new_backend")
    @classmethod
    def _distinct(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("legacy_backend"):
            raise ValueError(MSG_DISTINCT_BACKENDS)
        return value

    def routing_object(self) -> str:
        return f"{KIND} {self.http_route}"


def route_summary(body: Json) -> Json:
    """The parts of an HTTPRoute the router reads: its rules (whose backendRefs it weighs and
    which it copies into a segment rule), and the label that opts it in to Segue's writes."""
    rules = (body.get("spec") or {}).get("rules") or []
    return {**metadata_summary(body, MANAGED_LABEL), "spec": {"rules": list(rules)}}


PLUGIN: Final = RouterPlugin(
    key="gatewayAPI",
    settings=GatewayAPISettings,
    description="Weights on two backendRefs of an HTTPRoute rule (Gateway API).",
    router="segue.traffic.gatewayapi.router:build",
    watches=(WatchedKind(KIND, GROUP, VERSION, PLURAL, route_summary),),
    permissions=(
        Permission(
            (GROUP,),
            (PLURAL,),
            ("list", "watch", "patch"),
            "HTTPRoutes are watched (list, watch); the Gateway API router JSON-patches the "
            "weights of two backendRefs and its segment rule.",
        ),
    ),
    test_crds=(
        CRDSource(
            "sigs.k8s.io/gateway-api",
            GATEWAY_API_VERSION,
            tuple(
                f"config/crd/standard/gateway.networking.k8s.io_{n}.yaml"
                for n in ("gatewayclasses", "gateways", "httproutes", "referencegrants")
            ),
        ),
    ),
)
