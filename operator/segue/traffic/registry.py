"""Builds the router a Rollout's ``spec.traffic`` names, from the plugin the catalog lists
for that key. Adding a router is its folder plus one line in ``catalog.py``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from functools import cache
from typing import Any

from segue.api.spec import RolloutSpec, Traffic, Workload
from segue.traffic.base import Calls, ClusterView, Router, RouterContext
from segue.traffic.catalog import ROUTERS, plugin

Builder = Callable[[RouterContext, Any], Router]
DEFAULT_ROUTERS = ("gatewayAPI", "replicas")


class RouterDisabled(Exception):
    """The spec names a router this operator does not run."""


def disabled_message(key: str, enabled: Collection[str]) -> str:
    return (
        f"spec.traffic.{key}: this operator does not run the {key} router (it runs "
        f"{', '.join(sorted(enabled)) or 'none'}); enable it with --routers "
        "(chart value routers), or use one of those"
    )


@cache
def builder(key: str) -> Builder:
    """The function that builds the router for ``spec.traffic.<key>``."""
    module, _, name = plugin(key).router.partition(":")
    fn: Builder = getattr(importlib.import_module(module), name)
    return fn


def check_routers(keys: Collection[str]) -> list[str]:
    """``keys`` as given to --routers: every one must be a known router."""
    known = [p.key for p in ROUTERS]
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"unknown router(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return list(dict.fromkeys(keys))


def router_for(
    view: ClusterView,
    calls: Calls,
    namespace: str,
    traffic: Traffic,
    legacy: Workload,
    new: Workload,
    *,
    require_managed: bool = False,
    enabled: Collection[str] | None = None,
    unusable: Mapping[str, str] | None = None,
    asked: int | None = None,
) -> Router:
    """The router for these parts of a spec. Taking the parts rather than the whole spec
    lets an abort move traffic even when another part of the spec does not parse.
    ``require_managed``: write only to objects labelled ``segue.dev/managed=true``;
    ``enabled``: the routers this operator runs (RouterDisabled for any other);
    ``unusable``: enabled routers that cannot run here, and why (RouterDisabled too);
    ``asked``: the weight the Rollout's status records as asked (RouterContext.asked)."""
    key, settings = traffic.chosen()
    if unusable and key in unusable:
        raise RouterDisabled(
            f"spec.traffic.{key}: the {key} router cannot run in this operator: {unusable[key]}"
        )
    if enabled is not None and key not in enabled:
        raise RouterDisabled(disabled_message(key, enabled))
    ctx = RouterContext(view, calls, namespace, legacy, new, require_managed, asked)
    return builder(key)(ctx, settings)


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
