"""Manifests the scenarios apply: Deployments, Services, HTTPRoutes, flagd flag ConfigMaps
and Rollouts, and the new version's weight read back from an HTTPRoute."""

from __future__ import annotations

import json
from typing import Any

from segue import MANAGED_LABEL, MANAGED_VALUE


def deployment(
    name: str, app: str, replicas: int = 2, version: str | None = None
) -> dict[str, Any]:
    """A Deployment whose pods carry app=<app> and version=<version, default: name>."""
    labels = {"app": app, "version": version or name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        # Opted in to Segue's writes (the chart's default requireManagedLabel=true needs it).
        "metadata": {"name": name, "labels": {**labels, MANAGED_LABEL: MANAGED_VALUE}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": f"example.com/{app}:{name}"}]},
            },
        },
    }


def service(name: str, app: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app, "version": version}, "ports": [{"port": 80}]},
    }


def httproute(name: str, legacy: str, new: str, legacy_weight: int = 100) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "labels": {MANAGED_LABEL: MANAGED_VALUE}},
        "spec": {
            "parentRefs": [{"name": "public"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": legacy, "port": 80, "weight": legacy_weight},
                        {"name": new, "port": 80, "weight": 100 - legacy_weight},
                    ]
                }
            ],
        },
    }


def flagd_configmap(
    name: str,
    flag: str,
    legacy_variant: str,
    new_variant: str,
    key: str = "flags.flagd.json",
    labelled: bool = True,
) -> dict[str, Any]:
    """A ConfigMap holding a flagd flag-definitions document with ``flag`` (legacy by
    default, no targeting) and one unrelated flag, labelled for Segue unless told not to."""
    flags = {
        flag: {
            "state": "ENABLED",
            "variants": {
                legacy_variant: f"{flag}-{legacy_variant}",
                new_variant: f"{flag}-{new_variant}",
            },
            "defaultVariant": legacy_variant,
        },
        "banner": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "on",
        },
    }
    document = {"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": flags}
    labels = {MANAGED_LABEL: MANAGED_VALUE} if labelled else {}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {key: json.dumps(document, indent=2) + "\n"},
    }


def rollout(app: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    """A Rollout of <app>-v1 to <app>-v2 on the Gateway API router."""
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name or app},
        "spec": {
            "legacy": {"deployment": f"{app}-v1", "version": "v1"},
            "new": {"deployment": f"{app}-v2", "version": "v2"},
            "traffic": {
                "gatewayAPI": {
                    "httpRoute": app,
                    "legacyBackend": f"{app}-v1",
                    "newBackend": f"{app}-v2",
                }
            },
            **spec,
        },
    }


def new_weight(route: dict[str, Any], rule: int = 0) -> int | None:
    """The weight of an HTTPRoute's second backendRef (the new version), as Segue writes it."""
    try:
        return int(route["spec"]["rules"][rule]["backendRefs"][1].get("weight", 1))
    except (KeyError, IndexError, TypeError):
        return None
