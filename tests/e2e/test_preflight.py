"""The start-up check of the enabled routers against the real API server: a kind the server
does not serve is told apart from one it serves, so the router that needs it is not run
(its informer would otherwise hold every Rollout until its first listing)."""

from __future__ import annotations

from kubernetes import client

from segue.controller.preflight import _served, router_problems
from segue.traffic.catalog import plugin
from segue.traffic.plugin import WatchedKind
from segue.traffic.registry import DEFAULT_ROUTERS
from tests.e2e.conftest import Kube


def unserved(group: str, plural: str) -> WatchedKind:
    return WatchedKind("Nothing", group, "v1", plural, lambda body: body)


def test_served_kinds_are_told_from_unserved_ones(kube: Kube, crds: None) -> None:
    api: client.ApiClient = kube.api_client
    assert _served(api, plugin("gatewayAPI").watches[0]) is True
    assert _served(api, plugin("flagd").watches[0]) is True  # core: ConfigMaps
    assert _served(api, unserved("nothing.segue.dev", "nothings")) is False
    # A group the server has, without the kind.
    assert _served(api, unserved("gateway.networking.k8s.io", "nothings")) is False


def test_every_router_can_run_on_the_test_cluster(kube: Kube, crds: None) -> None:
    # The test cluster installs every router's CRDs, and the admin may do anything.
    assert router_problems(kube.api_client, DEFAULT_ROUTERS, []) == {}
