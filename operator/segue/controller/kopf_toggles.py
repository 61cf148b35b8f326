"""kopf's start-up readiness, without waking every waiting object on every new object.

Until every watched kind is listed and every listed object indexed, kopf holds each
object's handlers back: one toggle per object in a ``ToggleSet`` (its ``operator_indexed``),
and each object's worker waits on the set's condition. kopf notifies *all* waiters whenever
a toggle is added or dropped, although the set's state (all indexed, or not) changes once.
With N objects listed at start that is N wake-ups for each of N objects: at 3,000 HTTPRoutes
and 1,000 Rollouts it held every Rollout back for about 90 seconds after a start, aborts
included.

:func:`install` makes ``make_toggle`` and ``drop_toggle`` notify only when the set's state
changes. Nothing else waits on that condition for another reason: a toggle's own state
changes only through ``Toggle.turn_to``, which still notifies.
"""

from __future__ import annotations

import logging
from typing import Any

from kopf._cogs.aiokits import aiotoggles

log = logging.getLogger(__name__)
_INSTALLED = "_segue_notifies_on_change"


async def _make_toggle(
    self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.discard(toggle)
        if self.is_on() != before:
            self._condition.notify_all()


def install() -> bool:
    """Patch kopf's ToggleSet (once per process). A kopf whose ToggleSet is no longer built
    this way is left as it is, and said so: False."""
    cls: Any = aiotoggles.ToggleSet
    if getattr(cls, _INSTALLED, False):
        return True
    probe = cls(all)
    if not isinstance(getattr(probe, "_toggles", None), set) or not hasattr(probe, "_condition"):
        log.warning("kopf's ToggleSet has changed; its start-up readiness is left unpatched")
        return False
    cls.make_toggle = _make_toggle
    cls.drop_toggle = _drop_toggle
    setattr(cls, _INSTALLED, True)
    return True
