"""Which router a Rollout's ``spec.traffic`` asks for. Adding a router is one module plus
one entry here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from kubernetes import client

from segue.api.spec import RolloutSpec
from segue.traffic.base import Router
from segue.traffic.gatewayapi import GatewayAPIRouter
from segue.traffic.replicas import ReplicasRouter

_Factory = Callable[[client.ApiClient, str, RolloutSpec], Router | None]


def _gateway_api(api: client.ApiClient, namespace: str, spec: RolloutSpec) -> Router | None:
    gw = spec.traffic.gateway_api
    if gw is None:
        return None
    return GatewayAPIRouter(
        api, namespace, gw.http_route, gw.legacy_backend, gw.new_backend, gw.rule_index
    )


def _replicas(api: client.ApiClient, namespace: str, spec: RolloutSpec) -> Router | None:
    if spec.traffic.replicas is None:
        return None
    return ReplicasRouter(api, namespace, spec.legacy.deployment, spec.new.deployment)


ROUTERS: Final[dict[str, _Factory]] = {"gatewayAPI": _gateway_api, "replicas": _replicas}


def router_for(api: client.ApiClient, namespace: str, spec: RolloutSpec) -> Router:
    for factory in ROUTERS.values():
        router = factory(api, namespace, spec)
        if router is not None:
            return router
    # The spec model guarantees exactly one router; reaching here is a programming error.
    raise ValueError("spec.traffic names no known router")
