"""Shards: more than one active operator, each serving its own share of the Rollouts.

``--shard i/n`` makes a process serve shard ``i`` of ``n``: the Rollouts (and Migrations)
whose stable hash of ``namespace/name`` is ``i`` modulo ``n`` (:func:`shard_of`). Every
shard elects its own holder through a Lease of its own (:meth:`Shard.lease_name`); the
other processes of the shard stand by as with a single shard.

Shard Leases are named by index only, ``<group>-<i>``, whatever ``n`` is, with ``n`` in a
label (:data:`SHARDS_LABEL`); ``n = 1`` keeps the plain ``<group>`` of a single-shard
install. So the set of Lease names an install may use is fixed (``<group>`` and
``<group>-0`` to ``<group>-31``), RBAC grants exactly those whatever ``n`` is, and a resize
never takes a running process's permission away.

A resize (``n`` changes) must neither serve a Rollout twice nor drop one. A holder serves
only once a look at the group's Leases finds none of another ``n`` live
(:class:`GroupView`, judged on this process's monotonic clock, as a standby judges its own
Lease: a Lease is live while it is held and its claim changed within its duration); until
then it keeps its Lease and waits. Old processes release their Leases when they stop (or
the Leases expire), and the new ones start serving. Two processes of different ``n`` each
hold their own Lease before they look, so whichever looks second sees the other's Lease
held and waits: at most one ``n`` serves at a time.

While serving, a holder keeps looking (:class:`ServingCheck`) and stops, like a holder
that lost its Lease, if a Lease of another ``n`` whose holder serves (marked
:data:`~segue.controller.leader.SERVING_ANNOTATION`, or the unlabelled ``<group>`` Lease of
a Segue without shards) is claimed or renewed after it started serving: a holder whose
Lease it judged expired came back, or a process that does not wait.

Pure: no I/O, the time is an argument.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from segue.controller.leader import (
    SERVING_ANNOTATION,
    LeaseRecord,
    Seen,
    Timing,
    expires_at,
    observe,
)

Json = dict[str, Any]

MAX_SHARDS: Final = 32
SHARD_LABEL: Final = "segue.dev/shard"
SHARDS_LABEL: Final = "segue.dev/shards"
_SHARD_TEXT: Final = re.compile(r"^\s*(\d{1,3})\s*/\s*(\d{1,3})\s*$")


def shard_of(namespace: str, name: str, count: int) -> int:
    """The shard of the object ``namespace/name`` among ``count`` shards: the first 8 bytes
    of the SHA-256 of ``namespace/name``, big-endian, modulo ``count``. The same in every
    process and every release (never Python's salted ``hash``)."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``; ``Shard(0, 1)`` serves everything."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"the shard count must be 1 to {MAX_SHARDS}, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"the shard index must be 0 to {self.count - 1} (shards count from 0), "
                f"not {self.index}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``i/n``, e.g. ``0/3``; a clear error otherwise."""
        match = _SHARD_TEXT.match(text)
        if match is None:
            raise ValueError(f"expected INDEX/COUNT such as 0/3, not {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, namespace: str, name: str) -> bool:
        return self.count == 1 or shard_of(namespace, name, self.count) == self.index

    def owns_object(self, body: Mapping[str, Any]) -> bool:
        meta = body.get("metadata") or {}
        return self.owns(str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    def lease_name(self, group: str) -> str:
        """``group`` for a single shard (the name single-shard installs always used), else
        ``group-<index>``."""
        return group if self.count == 1 else f"{group}-{self.index}"

    def labels(self) -> dict[str, str]:
        """Labels this shard's holder writes on its Lease."""
        return {SHARD_LABEL: str(self.index), SHARDS_LABEL: str(self.count)}


def only_shard(shard: Shard, has_work: Callable[[Json], bool]) -> Callable[[Json], bool]:
    """``has_work`` for the objects of ``shard`` alone: a supervisor starts no worker for the
    others (their watch events still update the store)."""

    def mine(body: Json) -> bool:
        return shard.owns_object(body) and has_work(body)

    return mine


def lease_names(group: str) -> list[str]:
    """Every Lease name an install with Lease name ``group`` may use, whatever its shards."""
    return [group, *(f"{group}-{i}" for i in range(MAX_SHARDS))]


@dataclass(frozen=True)
class GroupLease:
    """A Lease of the group as one look saw it.

    ``shards``: the shard count of its holder (its :data:`SHARDS_LABEL`; 1 for the plain
    ``<group>`` Lease without one, written by a Segue without shards; 0 when unreadable).
    ``serving``: its holder serves (it marked so, or it is such an older Segue, which
    serves whenever it holds its Lease)."""

    name: str
    shards: int
    serving: bool
    record: LeaseRecord

    def describe(self) -> str:
        count = f"{self.shards} shards" if self.shards != 1 else "1 shard"
        return f"{self.name} ({count}, held by {self.record.holder or 'nobody'})"


def group_lease(group: str, obj: Json) -> GroupLease | None:
    """``obj`` as a Lease of ``group``, or None when it belongs to no shard of it."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    suffix = name[len(group) + 1 :] if name.startswith(f"{group}-") else None
    if name != group and not (suffix and suffix.isdigit() and int(suffix) < MAX_SHARDS):
        return None
    labels = meta.get("labels") or {}
    raw = labels.get(SHARDS_LABEL)
    if raw is None:
        shards, serving = (1, True) if name == group else (0, False)
    else:
        shards = int(raw) if str(raw).isdigit() else 0
        serving = (meta.get("annotations") or {}).get(SERVING_ANNOTATION) == "true"
    return GroupLease(name, shards, serving, LeaseRecord.from_object(obj))


@dataclass
class GroupView:
    """What a holder knows of the other Leases of its group, on its own monotonic clock:
    when it last saw each one's claim change. Like a standby, it forgets everything after
    a failed look, so after an outage a Lease counts as live for a full duration again."""

    shard: Shard
    timing: Timing
    seen: dict[str, Seen] = field(default_factory=dict)

    def look(self, leases: Iterable[GroupLease], own: str, now: float) -> list[GroupLease]:
        """The Leases of another shard count that are live now, by name. ``own``: this
        process's Lease, left out."""
        current = {lease.name: lease for lease in leases if lease.name != own}
        self.seen = {
            name: observe(self.seen.get(name), lease.record, now) for name, lease in current.items()
        }
        return [
            lease
            for name, lease in sorted(current.items())
            if lease.shards != self.shard.count
            and lease.record.holder
            and now < expires_at(self.seen[name], self.timing)
        ]

    def failed(self) -> None:
        self.seen = {}


@dataclass(frozen=True)
class ServingCheck:
    """The claims of the group's Leases when this holder started serving. A Lease of another
    shard count whose holder serves and whose claim is not one of these was claimed or
    renewed since: two shard counts would serve at once."""

    started: Mapping[str, tuple[object, ...]]

    @classmethod
    def at_start(cls, leases: Iterable[GroupLease]) -> ServingCheck:
        return cls({lease.name: lease.record.claim() for lease in leases})

    def intruders(self, shard: Shard, leases: Iterable[GroupLease], own: str) -> list[GroupLease]:
        return [
            lease
            for lease in leases
            if lease.name != own
            and lease.shards != shard.count
            and lease.serving
            and lease.record.holder
            and self.started.get(lease.name) != lease.record.claim()
        ]
