"""Counting the Kubernetes API requests the operator makes, Events included."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubernetes import client

from segue_testkit.scenario.env import Env


def requests_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Requests per method from one ``Operator.requests()`` reading to a later one."""
    return {m: after[m] - before.get(m, 0) for m in after if after[m] - before.get(m, 0)}


EVENT_POSTS = "Event POST (kopf)"


def rollout_events(
    env: Env, namespace: str, names: Sequence[str] | None = None
) -> dict[str, float]:
    """Events posted about Rollouts in ``namespace`` (only ``names``, if given), by reason.
    kopf posts each one with a request of its own, outside segue_kube_requests_total."""
    events: Any = client.CoreV1Api(env.api).list_namespaced_event(namespace)
    out: dict[str, float] = {}
    for e in events.items:
        ref = e.involved_object
        if ref.kind == "Rollout" and (names is None or ref.name in names):
            out[e.reason] = out.get(e.reason, 0) + (e.count or 1)
    return out


def with_events(
    env: Env, namespace: str, counted: dict[str, float], names: Sequence[str]
) -> dict[str, float]:
    """``counted`` (``Operator.requests()``) and, as method ``EVENT_POSTS``, the Events
    posted so far about the Rollouts ``names``."""
    events = sum(rollout_events(env, namespace, names).values())
    return {**counted, EVENT_POSTS: events} if events else dict(counted)


def by_method(spent: dict[str, float]) -> str:
    return "  ".join(f"{m} {v:.0f}" for m, v in sorted(spent.items())) or "none"
