"""Which router a Rollout's ``spec.traffic`` asks for. Adding a router is one module plus
one entry here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from segue.api.spec import RolloutSpec, Traffic, Workload
from segue.traffic.base import Calls, ClusterView, Router
from segue.traffic.gatewayapi import GatewayAPIRouter
from segue.traffic.replicas import ReplicasRouter

_Factory = Callable[[ClusterView, Calls, str, Traffic, Workload, Workload, bool], Router | None]


def _gateway_api(
    view: ClusterView,
    calls: Calls,
    ns: str,
    traffic: Traffic,
    legacy: Workload,
    new: Workload,
    require_managed: bool,
) -> Router | None:
    gw = traffic.gateway_api
    if gw is None:
        return None
    return GatewayAPIRouter(
        view,
        calls,
        ns,
        gw.http_route,
        gw.legacy_backend,
        gw.new_backend,
        gw.rule_index,
        require_managed=require_managed,
    )


def _replicas(
    view: ClusterView,
    calls: Calls,
    ns: str,
    traffic: Traffic,
    legacy: Workload,
    new: Workload,
    require_managed: bool,
) -> Router | None:
    if traffic.replicas is None:
        return None
    return ReplicasRouter(
        view, calls, ns, legacy.deployment, new.deployment, require_managed=require_managed
    )


ROUTERS: Final[dict[str, _Factory]] = {"gatewayAPI": _gateway_api, "replicas": _replicas}


def router_for(
    view: ClusterView,
    calls: Calls,
    namespace: str,
    traffic: Traffic,
    legacy: Workload,
    new: Workload,
    *,
    require_managed: bool = False,
) -> Router:
    """The router for these parts of a spec. Taking the parts rather than the whole spec
    lets an abort move traffic even when another part of the spec does not parse.
    ``require_managed``: write only to objects labelled ``segue.dev/managed=true``."""
    for factory in ROUTERS.values():
        router = factory(view, calls, namespace, traffic, legacy, new, require_managed)
        if router is not None:
            return router
    # The spec model guarantees exactly one router; reaching here is a programming error.
    raise ValueError("spec.traffic names no known router")


def router_for_spec(
    view: ClusterView,
    calls: Calls,
    namespace: str,
    spec: RolloutSpec,
    *,
    require_managed: bool = False,
) -> Router:
    return router_for(
        view,
        calls,
        namespace,
        spec.traffic,
        spec.legacy,
        spec.new,
        require_managed=require_managed,
    )
