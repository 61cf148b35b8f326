"""Every router Segue knows: one line per router. ``spec.traffic``, the chart's RBAC rules,
the operator's watches and the test cluster's CRDs are all assembled from this list."""

from __future__ import annotations

from typing import Final

from segue.traffic.flagd.plugin import PLUGIN as FLAGD
from segue.traffic.gatewayapi.plugin import PLUGIN as GATEWAY_API
from segue.traffic.istio.plugin import PLUGIN as ISTIO
from segue.traffic.nginx.plugin import PLUGIN as NGINX
from segue.traffic.plugin import RouterPlugin
from segue.traffic.replicas.plugin import PLUGIN as REPLICAS

ROUTERS: Final[tuple[RouterPlugin, ...]] = (
    GATEWAY_API,
    REPLICAS,
    FLAGD,
    NGINX,
    ISTIO,
)


def plugin(key: str) -> RouterPlugin:
    """The router under ``spec.traffic.<key>``; KeyError when there is none."""
    for p in ROUTERS:
        if p.key == key:
            return p
    raise KeyError(key)
