"""The NGINX Ingress router's settings, watched kind and permissions (Ingress is built in:
no CRD to install)."""

from __future__ import annotations

from typing import ClassVar, Final

from pydantic import Field, ValidationInfo, field_validator, model_validator

from segue import MANAGED_LABEL
from segue.api.base import LabelName, ObjectName, cel_rules
from segue.api.routing import RouterSettings
from segue.traffic.plugin import Json, Permission, RouterPlugin, WatchedKind, metadata_summary

GROUP: Final = "networking.k8s.io"
VERSION: Final = "v1"
PLURAL: Final = "ingresses"
KIND: Final = "Ingress"
DEFAULT_PREFIX: Final = "nginx.ingress.kubernetes.io"
CANARY_SUFFIX: Final = "-canary"
# The ingress class before spec.ingressClassName; ingress-nginx still honours it.
CLASS_ANNOTATION: Final = "kubernetes.io/ingress.class"
# The longest primary name whose default canary name, <ingress>-canary, is still a name.
MAX_DEFAULTED_INGRESS: Final = 253 - len(CANARY_SUFFIX)

MSG_DISTINCT_SERVICES: Final = (
    "spec.traffic.nginx.newService: must differ from legacyService "
    "(the primary Ingress routes to the legacy Service, the canary Ingress to the new one)"
)
MSG_DISTINCT_INGRESSES: Final = (
    "spec.traffic.nginx.canaryIngress: must differ from ingress "
    "(ingress-nginx pairs a canary Ingress with a primary one of the same hosts and paths)"
)
# nginx drops request headers with other characters by default (ignore_invalid_headers), and
# ingress-nginx looks the header up as $http_<name with - as _>.
SEGMENT_HEADER_PATTERN: Final = r"^[a-z0-9-]+$"
MSG_SEGMENT_HEADER: Final = (
    "spec.steps: setSegment.header must be lower-case letters, digits and '-' with the nginx "
    "router (nginx drops request headers with other characters by default); rename the header"
)
MSG_DEFAULT_CANARY_NAME: Final = (
    f"spec.traffic.nginx.ingress: at most {MAX_DEFAULTED_INGRESS} characters without "
    "canaryIngress (the default canary Ingress name <ingress>-canary must fit in 253); "
    "name the canary Ingress in canaryIngress"
)


class NginxSettings(RouterSettings):
    """ingress-nginx canary annotations on a canary Ingress you create beside the primary
    one; a segment is a canary-by-header rule with a pattern of the segment's values."""

    segments: ClassVar[bool] = True
    segment_header: ClassVar[tuple[str, str] | None] = (SEGMENT_HEADER_PATTERN, MSG_SEGMENT_HEADER)
    model_config = cel_rules(
        {
            "rule": "self.legacyService != self.newService",
            "message": MSG_DISTINCT_SERVICES,
            "fieldPath": ".newService",
        },
        {
            "rule": "!has(self.canaryIngress) || self.canaryIngress != self.ingress",
            "message": MSG_DISTINCT_INGRESSES,
            "fieldPath": ".canaryIngress",
        },
        {
            "rule": f"has(self.canaryIngress) || size(self.ingress) <= {MAX_DEFAULTED_INGRESS}",
            "message": MSG_DEFAULT_CANARY_NAME,
            "fieldPath": ".ingress",
        },
    )

    ingress: ObjectName = Field(
        description="The primary Ingress in the same namespace, routing the hosts and paths "
        "to legacyService (Argo Rollouts: stableIngress)."
    )
    canary_ingress: ObjectName | None = Field(
        None,
        description="The canary Ingress in the same namespace: the same hosts and paths, "
        'routed to newService, annotated nginx.ingress.kubernetes.io/canary: "true". '
        "Segue writes its canary-weight and by-header annotations; default: <ingress>-canary.",
    )
    legacy_service: LabelName = Field(description="Service of the legacy version.")
    new_service: LabelName = Field(description="Service of the new version.")
    annotation_prefix: ObjectName = Field(
        DEFAULT_PREFIX,
        description="Prefix of the ingress-nginx annotations (its --annotations-prefix).",
    )

    @field_validator("new_service")
    @classmethod
    def _distinct_services(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("legacy_service"):
            raise ValueError(MSG_DISTINCT_SERVICES)
        return value

    @model_validator(mode="after")
    def _canary_name(self) -> NginxSettings:
        if self.canary_ingress is None and len(self.ingress) > MAX_DEFAULTED_INGRESS:
            raise ValueError(MSG_DEFAULT_CANARY_NAME)
        if self.canary_ingress == self.ingress:
            raise ValueError(MSG_DISTINCT_INGRESSES)
        return self

    def canary(self) -> str:
        """The canary Ingress's name."""
        return self.canary_ingress or self.ingress + CANARY_SUFFIX

    def routing_object(self) -> str:
        return f"{KIND} {self.canary()}"


def _kept_annotation(key: str) -> bool:
    """The canary annotations under any prefix, and the legacy ingress class."""
    return key == CLASS_ANNOTATION or key.rpartition("/")[2].startswith("canary")


def _service(backend: object) -> str | None:
    """The Service name of an Ingress backend; None for a resource backend."""
    if not isinstance(backend, dict):
        return None
    service = backend.get("service")
    return str(service.get("name")) if isinstance(service, dict) else None


def ingress_summary(body: Json) -> Json:
    """The parts of an Ingress the router reads: the canary annotations (whatever their
    prefix) and the ingress class, which ingress-nginx pairs canary and primary by; every
    host and path with its backend Service; and the label that opts it in to Segue's writes."""
    summary = metadata_summary(body, MANAGED_LABEL)
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    summary["metadata"]["annotations"] = {
        k: v for k, v in annotations.items() if _kept_annotation(k)
    }
    spec = body.get("spec") or {}
    paths = [
        {
            "host": rule.get("host") or "",
            # ingress-nginx serves a path left out as "/".
            "path": path.get("path") or "/",
            "pathType": path.get("pathType") or "ImplementationSpecific",
            "service": _service(path.get("backend")),
        }
        for rule in spec.get("rules") or []
        for path in (rule.get("http") or {}).get("paths") or []
    ]
    default = spec.get("defaultBackend")
    summary["spec"] = {
        "ingressClassName": spec.get("ingressClassName"),
        "defaultBackend": None if default is None else {"service": _service(default)},
        "paths": paths,
    }
    return summary


PLUGIN: Final = RouterPlugin(
    key="nginx",
    settings=NginxSettings,
    description="Canary annotations of a canary Ingress beside the primary one (ingress-nginx).",
    router="segue.traffic.nginx.router:build",
    watches=(WatchedKind(KIND, GROUP, VERSION, PLURAL, ingress_summary),),
    permissions=(
        Permission(
            (GROUP,),
            (PLURAL,),
            ("list", "watch", "patch"),
            "Ingresses are watched (list, watch); the NGINX router JSON-patches the canary "
            "annotations of the canary Ingress (weight and by-header rule) and nothing else.",
        ),
    ),
)
