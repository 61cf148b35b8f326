"""Counts of the queries sent to metric providers, for the operator's metrics.

Rounds and batches report each query they send here; the operator's metrics listen. With
the number of Rollouts under analysis this gives queries per Rollout-minute, which
batching (``batcher``) keeps growing with the number of templates, not of Rollouts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

# A gate with its own query, in the ``template`` label of the counts.
CUSTOM: Final = "custom"

Listener = Callable[[str, str, int], None]


class QueryCounter:
    """Tells its listeners about every query sent: the provider's name, the gate template
    (or ``custom``) and how many Rollout versions the query serves (1 unless batched)."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def sent(self, provider: str, template: str, served: int) -> None:
        for listener in self.listeners:
            listener(provider, template, served)


QUERIES: Final = QueryCounter()
