"""A legacy and a new version of one app, applied and ready: behind an HTTPRoute (the
Gateway API router) or behind one Service (the replicas router)."""

from __future__ import annotations

from segue_testkit.scenario.env import Env
from segue_testkit.scenario.manifests import deployment, httproute, new_weight, service


def service_pair(env: Env, namespace: str, app: str) -> None:
    """<app>-v1 (legacy) and <app>-v2 (new): Deployments, Services and one HTTPRoute."""
    env.apply(
        namespace,
        deployment(f"{app}-v1", app, version="v1"),
        deployment(f"{app}-v2", app, version="v2"),
        service(f"{app}-v1", app, "v1"),
        service(f"{app}-v2", app, "v2"),
        httproute(app, f"{app}-v1", f"{app}-v2"),
    )
    for version in ("v1", "v2"):
        env.kubectl(
            "rollout", "status", "-n", namespace, f"deployment/{app}-{version}", "--timeout=120s"
        )


def replicas_pair(env: Env, namespace: str, app: str, legacy_pods: int = 4) -> None:
    """<app>-v1 (legacy, ``legacy_pods`` ready pods) and <app>-v2 (new, none yet) for the
    replicas router: one Service selecting both, the split made by ready pods. Segue's
    annotations from an earlier Rollout of the pair are removed."""
    env.apply(
        namespace,
        deployment(f"{app}-v1", app, legacy_pods, version="v1"),
        deployment(f"{app}-v2", app, 0, version="v2"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": app},
            "spec": {"selector": {"app": app}, "ports": [{"port": 80}]},
        },
    )
    env.kubectl(
        "annotate", "-n", namespace, f"deployment/{app}-v1", f"deployment/{app}-v2",
        "segue.dev/baseline-replicas-",
    )  # fmt: skip
    for version in ("v1", "v2"):
        env.kubectl(
            "rollout", "status", "-n", namespace, f"deployment/{app}-{version}", "--timeout=120s"
        )


def route_weight(env: Env, namespace: str, route: str) -> int | None:
    return new_weight(env.get_json(namespace, "httproute", route))
