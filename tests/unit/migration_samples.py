"""Migration objects as the API server returns them, for the CLI tests."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from segue.cli.migration import MigrationView
from tests.unit.cli_samples import NOW, iso

SPEC: dict[str, Any] = {
    "rollbackScope": "wave",
    "waves": [
        {"name": "low", "rollouts": ["catalog"], "bakeTime": "5m"},
        {"name": "medium", "rollouts": ["cart", "orders"]},
        {"name": "critical", "rollouts": ["payments"], "approval": True},
    ],
}


def at(minutes: float) -> str:
    """A time ``minutes`` before NOW."""
    return iso(NOW - timedelta(minutes=minutes))


def member(name: str, phase: str, weight: int) -> dict[str, Any]:
    return {"name": name, "phase": phase, "weight": weight}


def rolling_back() -> dict[str, Any]:
    """Wave 1 rolling back by wave scope: cart's error-rate gate failed; orders had Succeeded."""
    return {
        "phase": "RollingBack",
        "wave": 1,
        "observedGeneration": 1,
        "message": "rollback rb-1 (wave scope): cart gate error-rate 0.12 > 0.05",
        "waves": [
            {
                "name": "low",
                "phase": "Succeeded",
                "startedAt": at(30),
                "succeededAt": at(22),
                "bakeUntil": at(17),
                "members": [member("catalog", "Succeeded", 100)],
            },
            {
                "name": "medium",
                "phase": "RollingBack",
                "startedAt": at(16),
                "members": [member("cart", "RolledBack", 0), member("orders", "RollingBack", 40)],
            },
            {"name": "critical", "phase": "Pending", "members": [member("payments", "Waiting", 0)]},
        ],
        "rollbacks": [
            {
                "id": "rb-1",
                "scope": "wave",
                "trigger": {
                    "rollout": "cart",
                    "gate": "error-rate",
                    "value": 0.12,
                    "legacyValue": 0.0,
                    "bound": "<= 0.05",
                    "actor": "gate error-rate",
                    "reason": "error-rate 0.12 above 0.05",
                },
                "members": ["cart", "orders"],
                "initiatedAt": at(2),
                "outcome": "InProgress",
            }
        ],
    }


def migration(
    name: str = "shop-v2",
    namespace: str = "shop",
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Migration",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generation": 1,
            "resourceVersion": "200",
            "creationTimestamp": iso(NOW - timedelta(hours=1)),
            "annotations": dict(annotations or {}),
        },
        "spec": copy.deepcopy(SPEC if spec is None else spec),
        "status": copy.deepcopy(rolling_back() if status is None else status),
    }


def mview(**kwargs: Any) -> MigrationView:
    return MigrationView.from_object(migration(**kwargs))
