"""What a batched gate query is, as plain values: a :class:`Family` of gates that can share
one query, and a :class:`BatchRef` naming one Rollout version's series in it. Pure: a
provider's planning builds them, ``batcher`` runs them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# One series of a vector result: its labels and its number (None: NaN or ±Inf).
Series = tuple[Mapping[str, str], float | None]


class Family(Protocol):
    """A measure many Rollouts can share: hashable, equal for gates that batch together."""

    @property
    def template(self) -> str:
        """The gate template it measures (the ``template`` label of the query counts)."""
        ...

    def chunks(self, members: Iterable[Hashable]) -> list[tuple[str, tuple[Hashable, ...]]]:
        """The queries covering ``members``, each with the members it covers, every one
        within the provider's bounds (members per query, matcher size)."""
        ...

    def pick(self, series: Sequence[Series], member: Hashable) -> float | None:
        """``member``'s value in a query's answer (None: no data); raises
        :class:`~segue.analysis.errors.UnusableResult` when it cannot tell."""
        ...


@dataclass(frozen=True)
class BatchRef:
    """One side (new or legacy) of a planned gate that can share its query: the family and
    the member (e.g. its app and version label values) whose series it reads."""

    family: Family
    member: Hashable
