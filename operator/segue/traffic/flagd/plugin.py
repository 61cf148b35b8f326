"""The flagd router's settings, watched kind (labelled ConfigMaps only) and permissions."""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import Field, StringConstraints, ValidationInfo, field_validator

from segue import MANAGED_LABEL, MANAGED_VALUE
from segue.api.base import ObjectName, cel_rules
from segue.api.routing import RouterSettings
from segue.traffic.plugin import Json, Permission, RouterPlugin, WatchedKind, metadata_summary

KIND: Final = "ConfigMap"
GROUP: Final = ""
VERSION: Final = "v1"
PLURAL: Final = "configmaps"
DEFAULT_KEY: Final = "flags.flagd.json"
# What the API server allows in a ConfigMap (all keys together), so also what Segue reads.
MAX_DOCUMENT_BYTES: Final = 1024 * 1024

# A ConfigMap data key, as the API server allows it.
ConfigMapKey = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
]
# A flag key or variant name: the names flagd users write, without spaces, quotes or
# control characters, so that messages and logs show them as they are.
FlagName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._:/@+-]*$"),
]

MSG_DISTINCT_VARIANTS: Final = (
    "spec.traffic.flagd.newVariant: must differ from legacyVariant "
    "(each version needs a variant of its own in the flag)"
)


class FlagdSettings(RouterSettings):
    """A flagd flag (OpenFeature) in a ConfigMap: Segue writes the flag's ``targeting``
    (a ``fractional`` split between the two variants on the evaluation's targeting key) and
    its ``defaultVariant``; a segment is an ``if`` on an evaluation-context key. The
    ConfigMap must be labelled segue.dev/managed=true, whatever --require-managed-label
    says: the operator watches only labelled ConfigMaps."""

    segments: ClassVar[bool] = True
    model_config = cel_rules(
        {
            "rule": "self.legacyVariant != self.newVariant",
            "message": MSG_DISTINCT_VARIANTS,
            "fieldPath": ".newVariant",
        }
    )

    config_map: ObjectName = Field(
        description="Name of the ConfigMap in the same namespace that holds the flag "
        "definitions; it must be labelled segue.dev/managed=true."
    )
    key: ConfigMapKey = Field(
        DEFAULT_KEY,
        description="Key of the ConfigMap whose value is the flagd flag-definitions JSON "
        f"document (default {DEFAULT_KEY}).",
    )
    flag: FlagName = Field(description="Key of the flag under the document's flags.")
    legacy_variant: FlagName = Field(
        description="Variant of the flag that selects the legacy version."
    )
    new_variant: FlagName = Field(description="Variant of the flag that selects the new version.")

    @field_validator("new_variant")
    @classmethod
    def _distinct(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("legacy_variant"):
            raise ValueError(MSG_DISTINCT_VARIANTS)
        return value

    def routing_object(self) -> str:
        return f"flag {self.flag} in ConfigMap {self.config_map}"


def configmap_summary(body: Json) -> Json:
    """The parts of a ConfigMap the router reads: its text values (one of which is the flag
    document; the API server bounds them all to 1 MiB) and the label that opts it in."""
    data = body.get("data") or {}
    return {
        **metadata_summary(body, MANAGED_LABEL),
        "data": {k: v for k, v in data.items() if isinstance(v, str)},
    }


PLUGIN: Final = RouterPlugin(
    key="flagd",
    settings=FlagdSettings,
    description="Targeting of a flagd (OpenFeature) flag in a ConfigMap: a fractional split "
    "between two variants.",
    router="segue.traffic.flagd.router:build",
    watches=(
        WatchedKind(
            KIND,
            GROUP,
            VERSION,
            PLURAL,
            configmap_summary,
            labels=((MANAGED_LABEL, MANAGED_VALUE),),
        ),
    ),
    permissions=(
        Permission(
            (GROUP,),
            (PLURAL,),
            ("list", "watch", "patch"),
            "ConfigMaps labelled segue.dev/managed=true are watched (list, watch); the flagd "
            "router JSON-patches the flag document of the one a Rollout names.",
        ),
    ),
)
