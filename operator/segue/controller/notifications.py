"""Webhook targets of a Rollout, resolved from the Secrets its ``spec.notifications`` name.

The notification hook runs synchronously after each applied decision, so targets are read
ahead of time by the reconcile pass and cached; a Secret is read again at most every
``ttl`` seconds or when the Rollout's notification settings change.

A target whose host the operator's rules refuse (:mod:`segue.notify.destinations`) is
reported as a Warning Event ``NotificationRefused`` on the Rollout as soon as its Secret is
read, naming the entry and the reason; so is one the dispatcher refuses when its name
resolves to a refused address. Each (entry, reason) is reported once while the operator
runs. A refused target stays in the list: the dispatcher refuses it again without sending,
so each notification it misses counts in ``segue_notifications_failed``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from segue.api.spec import RolloutSpec
from segue.controller.kube import Json, Secrets
from segue.notify import Notification, WebhookTarget
from segue.notify.destinations import Destinations, Refusal

log = logging.getLogger(__name__)

Key = tuple[str, str]
PostEvent = Callable[[Json, str, str, str], None]

REFUSED_REASON: Final = "NotificationRefused"
# Refusals reported per Rollout: entries are at most 8, but a name that resolves to ever
# new addresses must not post ever new Events.
MAX_REPORTED_PER_ROLLOUT: Final = 16


class WebhookTargets:
    def __init__(
        self,
        secrets: Secrets,
        ttl: float = 300.0,
        destinations: Destinations | None = None,
        post_event: PostEvent | None = None,
    ) -> None:
        self._secrets = secrets
        self._ttl = ttl
        self.destinations = destinations if destinations is not None else Destinations()
        self._post_event = post_event
        # key -> (settings fingerprint, read at, targets)
        self._cache: dict[Key, tuple[str, float, list[WebhookTarget]]] = {}
        # key -> what an Event about the Rollout refers to
        self._refs: dict[Key, Json] = {}
        # key -> (entry, reason) already reported
        self._reported: dict[Key, set[tuple[str, str]]] = {}

    async def refresh(
        self, namespace: str, name: str, spec: RolloutSpec, obj: Json | None = None
    ) -> list[str]:
        """Resolve the targets if stale; returns problems to report (missing Secret...).
        Refused targets are reported here, once."""
        key = (namespace, name)
        if obj is not None:
            self._refs[key] = _reference(obj)
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
            ref = n.secret_ref
            try:
                data = await self._secrets.read(namespace, ref.name)
            except Exception as e:
                problems.append(f"{where}: cannot read Secret {ref.name}: {_short(e)}")
                continue
            url = data.get(ref.key, "").strip()
            if not url:
                problems.append(f"{where}: Secret {ref.name} has no key {ref.key}")
                continue
            source = f"{where} (Secret {ref.name}, key {ref.key})"
            try:
                target = WebhookTarget.of(url, n.format, n.events, source=source)
            except ValueError as e:
                problems.append(f"{where}: {e}")
                continue
            refusal = self.destinations.check_host(target.host)
            if refusal is not None:
                self.refused(namespace, name, target, refusal)
            targets.append(target)
        self._cache[key] = (fingerprint, time.monotonic(), targets)
        return problems

    def refused(self, namespace: str, name: str, target: WebhookTarget, refusal: Refusal) -> None:
        """Report that nothing goes to ``target`` of this Rollout: a Warning Event, once per
        entry and reason."""
        key = (namespace, name)
        reported = self._reported.setdefault(key, set())
        told = (target.source, refusal.reason)
        if told in reported or len(reported) >= MAX_REPORTED_PER_ROLLOUT:
            return
        ref = self._refs.get(key)
        if ref is None or self._post_event is None:
            return
        reported.add(told)
        where = target.source or "spec.notifications"
        message = f"{where}: nothing is sent to {target.redacted}: {refusal}"
        self._post_event(ref, "Warning", REFUSED_REASON, message)

    def on_refused(self, n: Notification, target: WebhookTarget, refusal: Refusal) -> None:
        """The dispatcher's ``on_refused``: a target refused at connect time."""
        self.refused(n.namespace, n.rollout, target, refusal)

    def targets_for(self, namespace: str, name: str, obj: Any = None) -> list[WebhookTarget]:
        cached = self._cache.get((namespace, name))
        return list(cached[2]) if cached else []

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._cache.pop(key, None)
        self._refs.pop(key, None)
        self._reported.pop(key, None)


def _reference(obj: Json) -> Json:
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid") if k in meta},
    }


def _short(e: Exception) -> str:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", None)
    return f"{status} {reason}" if status else str(e)
