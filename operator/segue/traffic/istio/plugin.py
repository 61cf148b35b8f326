"""The Istio router's settings, watched kind, permissions and test CRDs."""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import Field, StringConstraints, ValidationInfo, field_validator

from segue import MANAGED_LABEL
from segue.api.base import LabelName, ObjectName, SpecModel, cel_rules
from segue.api.routing import RouterSettings
from segue.traffic.plugin import (
    CRDSource,
    Json,
    Permission,
    RouterPlugin,
    WatchedKind,
    metadata_summary,
)

GROUP: Final = "networking.istio.io"
VERSION: Final = "v1"
PLURAL: Final = "virtualservices"
KIND: Final = "VirtualService"
ISTIO_API_VERSION: Final = "v1.32.0"
# The HTTP route Segue inserts before the weighted one for a segment.
SEGMENT_ROUTE: Final = "segue-segment"

# A service registry name (Kubernetes Service, ServiceEntry host): lower-case DNS name.
HOST_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Host = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=HOST_PATTERN)]
# spec.http[].name: Istio does not restrict it; printable ASCII without spaces.
RouteName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[!-~]+$")]

MSG_DISTINCT_DESTINATIONS: Final = (
    "spec.traffic.istio.newDestination: must differ from legacyDestination in host or subset "
    "(each version needs a destination of its own in the route)"
)
MSG_NOT_SEGMENT_ROUTE: Final = (
    f"spec.traffic.istio.routeName: {SEGMENT_ROUTE} is the HTTP route Segue writes for "
    "segments; name the route that carries the service's traffic"
)


class IstioDestination(SpecModel):
    """One ``destination`` of the HTTP route, as written there: host and subset."""

    host: Host = Field(
        description="destination.host in the route, e.g. checkout (a short name stands for "
        "<name>.<namespace>.svc.cluster.local, as in Istio)."
    )
    subset: LabelName | None = Field(
        None,
        description="destination.subset in the route (a subset of the host's "
        "DestinationRule); unset: the destination without a subset.",
    )


class IstioSettings(RouterSettings):
    """Weights on two destinations of an HTTP route of an Istio VirtualService; a segment is
    an HTTP route of Segue's own, placed just before it, matching the segment's header."""

    segments: ClassVar[bool] = True
    model_config = cel_rules(
        {
            "rule": "self.legacyDestination.host != self.newDestination.host || "
            "(has(self.legacyDestination.subset) ? self.legacyDestination.subset : '') != "
            "(has(self.newDestination.subset) ? self.newDestination.subset : '')",
            "message": MSG_DISTINCT_DESTINATIONS,
            "fieldPath": ".newDestination",
        },
        {
            "rule": f"!has(self.routeName) || self.routeName != '{SEGMENT_ROUTE}'",
            "message": MSG_NOT_SEGMENT_ROUTE,
            "fieldPath": ".routeName",
        },
    )

    virtual_service: ObjectName = Field(
        description="Name of the VirtualService in the same namespace."
    )
    route_name: RouteName | None = Field(
        None,
        description="Name of the HTTP route (spec.http[].name) to weigh; unset: the "
        "VirtualService must have exactly one HTTP route.",
    )
    legacy_destination: IstioDestination = Field(
        description="Destination of the legacy version in the route."
    )
    new_destination: IstioDestination = Field(
        description="Destination of the new version in the route."
    )

    @field_validator("route_name")
    @classmethod
    def _not_segment_route(cls, value: str | None) -> str | None:
        if value == SEGMENT_ROUTE:
            raise ValueError(MSG_NOT_SEGMENT_ROUTE)
        return value

    @field_validator("new_destination")
    @classmethod
    def _distinct(cls, value: IstioDestination, info: ValidationInfo) -> IstioDestination:
        if value == info.data.get("legacy_destination"):
            raise ValueError(MSG_DISTINCT_DESTINATIONS)
        return value

    def routing_object(self) -> str:
        return f"{KIND} {self.virtual_service}"


def virtual_service_summary(body: Json) -> Json:
    """The parts of a VirtualService the router reads: its HTTP routes (whose destinations
    it weighs and which it copies into a segment route), and the label that opts it in."""
    http = (body.get("spec") or {}).get("http") or []
    return {**metadata_summary(body, MANAGED_LABEL), "spec": {"http": list(http)}}


PLUGIN: Final = RouterPlugin(
    key="istio",
    settings=IstioSettings,
    description="Weights on two destinations of an HTTP route of an Istio VirtualService.",
    router="segue.traffic.istio.router:build",
    watches=(WatchedKind(KIND, GROUP, VERSION, PLURAL, virtual_service_summary),),
    permissions=(
        Permission(
            (GROUP,),
            (PLURAL,),
            ("list", "watch", "patch"),
            "VirtualServices are watched (list, watch); the Istio router JSON-patches the "
            "weights of two destinations of an HTTP route and its segment route.",
        ),
    ),
    test_crds=(
        CRDSource(
            "istio.io/api",
            ISTIO_API_VERSION,
            ("kubernetes/customresourcedefinitions.gen.yaml",),
        ),
    ),
)
