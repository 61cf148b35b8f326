"""The replicas router's settings and permissions (it reads the Deployments every Rollout
references, which the operator watches anyway)."""

from __future__ import annotations

from typing import Final

from pydantic import Field

from segue.api.base import ObjectName
from segue.api.routing import RouterSettings
from segue.traffic.plugin import Permission, RouterPlugin


class ReplicasSettings(RouterSettings):
    """No mesh: the weight is realised by the ratio of ready pods behind one Service."""

    service: ObjectName | None = Field(None, description="Service selecting both versions.")

    def routing_object(self) -> str:
        return "the Deployments"


PLUGIN: Final = RouterPlugin(
    key="replicas",
    settings=ReplicasSettings,
    description="No mesh: the share of ready pods of the two Deployments behind one Service.",
    router="segue.traffic.replicas.router:build",
    permissions=(
        Permission(
            ("apps",),
            ("deployments/scale",),
            ("patch",),
            "The replicas router scales the two Deployments by patching the scale subresource, "
            "which writes spec.replicas and nothing else.",
        ),
    ),
)
