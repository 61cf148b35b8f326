"""The small protocol every router implements, and the errors it raises."""

from __future__ import annotations

from typing import Protocol

from segue import FIELD_MANAGER as FIELD_MANAGER


class RouterError(Exception):
    """The routing object cannot be read or written as configured (a user-fixable problem)."""


class Router(Protocol):
    """Moves traffic between the legacy and the new version.

    Weights are the new version's share in percent (0..100). `set_weight` is idempotent:
    calling it again with the same weight changes nothing. A router that realises the weight
    by scaling pods sets `manages_capacity`, so the engine leaves readiness ordering to it.
    """

    manages_capacity: bool

    async def verify(self) -> list[str]:
        """Problems that stop this router from working (missing objects), empty when fine."""
        ...

    async def read_weight(self) -> int:
        """The weight in effect right now, as read back from the cluster."""
        ...

    async def set_weight(self, weight: int) -> None:
        """Ask for `weight`; read_weight tells when it has taken effect."""
        ...
