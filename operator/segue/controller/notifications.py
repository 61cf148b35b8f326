"""Webhook targets of a Rollout, resolved from the Secrets its ``spec.notifications`` name.

The notification hook runs synchronously after each applied decision, so targets are read
ahead of time by the reconcile pass and cached; a Secret is read again at most every
``ttl`` seconds or when the Rollout's notification settings change.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from segue.api.spec import RolloutSpec
from segue.controller.kube import Secrets
from segue.notify import WebhookTarget

log = logging.getLogger(__name__)

Key = tuple[str, str]


class WebhookTargets:
    def __init__(self, secrets: Secrets, ttl: float = 300.0) -> None:
        self._secrets = secrets
        self._ttl = ttl
        # key -> (settings fingerprint, read at, targets)
        self._cache: dict[Key, tuple[str, float, list[WebhookTarget]]] = {}

    async def refresh(self, namespace: str, name: str, spec: RolloutSpec) -> list[str]:
        """Resolve the targets if stale; returns problems to report (missing Secret...)."""
        key = (namespace, name)
        wanted = spec.notifications or []
        if not wanted:
            self._cache.pop(key, None)
            return []
        fingerprint = json.dumps([n.model_dump(mode="json") for n in wanted], sort_keys=True)
        cached = self._cache.get(key)
        if cached and cached[0] == fingerprint and time.monotonic() - cached[1] < self._ttl:
            return []
        targets: list[WebhookTarget] = []
        problems: list[str] = []
        for i, n in enumerate(wanted):
            where = f"spec.notifications[{i}].secretRef"
            try:
                data = await self._secrets.read(namespace, n.secret_ref.name)
            except Exception as e:
                problems.append(f"{where}: cannot read Secret {n.secret_ref.name}: {_short(e)}")
                continue
            url = data.get(n.secret_ref.key, "").strip()
            if not url:
                ref = n.secret_ref
                problems.append(f"{where}: Secret {ref.name} has no key {ref.key}")
                continue
            try:
                targets.append(WebhookTarget.of(url, n.format, n.events))
            except ValueError as e:
                problems.append(f"{where}: {e}")
        self._cache[key] = (fingerprint, time.monotonic(), targets)
        return problems

    def targets_for(self, namespace: str, name: str, obj: Any = None) -> list[WebhookTarget]:
        cached = self._cache.get((namespace, name))
        return list(cached[2]) if cached else []

    def forget(self, namespace: str, name: str) -> None:
        self._cache.pop((namespace, name), None)


def _short(e: Exception) -> str:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", None)
    return f"{status} {reason}" if status else str(e)
