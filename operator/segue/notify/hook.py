"""The controller's side of notifications in one object: after each applied decision, work
out what to tell and queue it for the Rollout's receivers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from segue.api import RolloutStatus
from segue.engine import PhaseChanged
from segue.notify.dispatcher import Dispatcher
from segue.notify.events import notifications_for
from segue.notify.types import WebhookTarget

# (namespace, name, the Rollout object) -> its receivers, with URLs already read from the
# Secrets the Rollout names. Called only when there is something to send.
TargetsFor = Callable[[str, str, Any], Sequence[WebhookTarget]]


class NotificationHook:
    """Fits the controller's ``Hooks`` protocol (``decided``). Never blocks: the dispatcher
    only enqueues."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        targets_for: TargetsFor,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.dispatcher = dispatcher
        self.targets_for = targets_for
        self.clock = clock

    def decided(
        self,
        namespace: str,
        name: str,
        old: RolloutStatus | None,
        new: RolloutStatus,
        obj: Any = None,
        changes: Sequence[PhaseChanged] = (),
    ) -> None:
        notes = notifications_for(namespace, name, old, new, self.clock(), changes)
        if not notes:
            return
        targets = self.targets_for(namespace, name, obj)
        for n in notes:
            self.dispatcher.publish(targets, n)
