"""A Migration as the API server returns it, parsed once into what the commands and views read.

Parsing is forgiving like :mod:`segue.cli.rollout`: a wave or rollback entry this CLI does not
understand (written by a newer operator) is left out and named in a note, the rest is shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from segue.api.migration import MigrationSpec, MigrationStatus, Wave, WaveStatus
from segue.cli.rollout import first_error, parse_leniently, parse_time

# Migration phases in which a wave is still to start.
_MOVING: Final = frozenset({"Pending", "Progressing", "AwaitingApproval", "Baking"})


@dataclass(frozen=True)
class WaveView:
    """One wave: what the spec asks (when it parses) and what the status says."""

    index: int
    name: str
    spec: Wave | None
    status: WaveStatus | None

    @property
    def phase(self) -> str:
        return self.status.phase if self.status is not None else "Pending"

    @property
    def started(self) -> bool:
        return self.status is not None and (
            self.status.started_at is not None or self.status.phase != "Pending"
        )

    @property
    def needs_approval(self) -> bool:
        return bool(self.spec and self.spec.approval)


@dataclass(frozen=True)
class MigrationView:
    namespace: str
    name: str
    status: MigrationStatus
    spec: MigrationSpec | None = None
    spec_error: str | None = None
    status_error: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    generation: int | None = None
    created: datetime | None = None
    resource_version: str | None = None
    raw_phase: str | None = None  # as written, even if this CLI does not know the phase

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> MigrationView:
        meta: Mapping[str, Any] = obj.get("metadata") or {}
        spec: MigrationSpec | None = None
        spec_error: str | None = None
        try:
            spec = MigrationSpec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            spec_error = first_error(e)
        raw_status: Mapping[str, Any] = obj.get("status") or {}
        status, status_error = parse_leniently(MigrationStatus, raw_status)
        raw_phase = raw_status.get("phase")
        created = meta.get("creationTimestamp")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            status=status,
            spec=spec,
            spec_error=spec_error,
            status_error=status_error,
            annotations=dict(meta.get("annotations") or {}),
            generation=meta.get("generation"),
            created=parse_time(created) if isinstance(created, str) else None,
            resource_version=meta.get("resourceVersion"),
            raw_phase=str(raw_phase) if raw_phase else None,
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def phase(self) -> str:
        return self.raw_phase or "<no status>"

    @property
    def waves(self) -> list[WaveView]:
        """The waves in order: the spec's, each with its status (matched by name); waves only
        the status knows (the spec does not parse) are shown from the status alone."""
        by_name = {w.name: w for w in self.status.waves}
        if self.spec is not None:
            return [
                WaveView(i, w.name, w, by_name.get(w.name)) for i, w in enumerate(self.spec.waves)
            ]
        return [WaveView(i, w.name, None, w) for i, w in enumerate(self.status.waves)]

    def wave_at(self, index: int) -> WaveView | None:
        waves = self.waves
        return waves[index] if 0 <= index < len(waves) else None

    def waiting_wave(self) -> WaveView | None:
        """The wave a person is asked to approve: the first that has not started, while the
        Migration is AwaitingApproval."""
        if self.status.phase != "AwaitingApproval":
            return None
        waves = self.waves
        first = next((w for w in waves if not w.started), None)
        return first if first is not None else self.wave_at(self.status.wave)

    def next_approval(self) -> WaveView | None:
        """The next wave, not started yet, that will wait for a person."""
        if self.status.phase not in _MOVING:
            return None
        return next((w for w in self.waves if not w.started and w.needs_approval), None)

    @property
    def member_count(self) -> tuple[int, int]:
        """Members Succeeded, and members known (from the status)."""
        members = [m for w in self.status.waves for m in w.members]
        return sum(1 for m in members if m.phase == "Succeeded"), len(members)
