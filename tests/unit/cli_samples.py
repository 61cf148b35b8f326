"""Rollout objects as the API server returns them, for the CLI tests."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from segue.cli.rollout import RolloutView

NOW = datetime(2026, 3, 1, 12, 10, tzinfo=UTC)

# Plan: 0 setWeight 5, 1 pause 10m, 2 setWeight 25, 3 pause 30m, 4 approval, 5 setWeight 50,
# 6 setWeight 100 (appended by plan()).
STEPS: list[dict[str, Any]] = [
    {"setWeight": 5},
    {"pause": {"duration": "10m"}},
    {"setWeight": 25},
    {"pause": {"duration": "30m"}},
    {"approval": {}},
    {"setWeight": 50},
]


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def history(n: int) -> list[dict[str, Any]]:
    return [
        {
            "time": iso(NOW - timedelta(minutes=n - i)),
            "step": i % 4,
            "weight": 25,
            "event": "WeightSet",
            "reason": f"entry {i}: weight 25% confirmed by the router",
            "actor": "segue",
        }
        for i in range(n)
    ]


def rollout(
    name: str = "checkout",
    namespace: str = "shop",
    steps: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    **status: Any,
) -> dict[str, Any]:
    """A Rollout at step 3 (a 30m hold that began 10 minutes ago), 25%, two gates."""
    base_status: dict[str, Any] = {
        "phase": "Progressing",
        "step": 3,
        "totalSteps": 7,
        "weight": 25,
        "targetWeight": 25,
        "observedGeneration": 2,
        "stepStartedAt": iso(NOW - timedelta(minutes=10)),
        "message": "step 3: holding at 25% until 2026-03-01T12:30:00Z",
        "gates": [
            {
                "name": "error-rate",
                "value": 0.0123,
                "legacyValue": 0.011,
                "bound": "<= 0.05",
                "verdict": "Pass",
                "consecutiveFailures": 0,
                "failureLimit": 1,
            },
            {
                "name": "latency-p99",
                "value": None,
                "legacyValue": 0.2,
                "bound": "<= 2x legacy",
                "verdict": "Inconclusive",
                "consecutiveFailures": 0,
                "consecutiveNoData": 2,
                "failureLimit": 3,
                "message": "no data for the new version yet",
            },
        ],
        "history": history(3),
    }
    base_status.update(status)
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generation": 2,
            "resourceVersion": "100",
            "creationTimestamp": iso(NOW - timedelta(hours=1)),
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "legacy": {"deployment": f"{name}-v1"},
            "new": {"deployment": f"{name}-v2"},
            "traffic": {
                "gatewayAPI": {
                    "httpRoute": name,
                    "legacyBackend": f"{name}-v1",
                    "newBackend": f"{name}-v2",
                }
            },
            "steps": copy.deepcopy(STEPS if steps is None else steps),
            "analysis": {
                "gates": [
                    {"name": "error-rate", "query": "errors", "max": 0.05},
                    {"name": "latency-p99", "template": "latency"},
                ]
            },
            "rollback": {"mode": "graceful", "duration": "5m"},
        },
        "status": base_status,
    }


def view(**kwargs: Any) -> RolloutView:
    return RolloutView.from_object(rollout(**kwargs))
