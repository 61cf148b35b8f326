"""The plain values of notifications: what happened to a Rollout, and where to tell it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, cast, get_args
from urllib.parse import urlsplit

from yarl import URL

from segue.api.spec import NotificationFormat, NotificationKind
from segue.api.status import GateStatus

# The kinds a Rollout's spec.notifications[].events may name: the API's own list.
Kind = NotificationKind
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

Format = NotificationFormat
FORMATS: Final[tuple[Format, ...]] = get_args(Format)


@dataclass(frozen=True)
class Notification:
    """One thing worth telling people about a Rollout. ``step`` is 0-based, as in status."""

    kind: Kind
    namespace: str
    rollout: str
    phase: str
    step: int
    weight: int
    message: str
    time: datetime
    total_steps: int | None = None
    previous_phase: str | None = None
    # The gate behind a pause or rollback, with the numbers that decided it.
    gate: GateStatus | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown notification kind {self.kind!r}")


@dataclass(frozen=True)
class WebhookTarget:
    """A receiver. ``events``: the kinds it wants; None means all of them.

    The URL usually embeds a credential (Slack webhook URLs do), so ``repr`` and logs show
    only its scheme and host.
    """

    url: str = field(repr=False)
    format: Format = "json"
    events: frozenset[Kind] | None = None
    # Where it was configured, for reports (``spec.notifications[1].secretRef``); not part
    # of its identity, so Rollouts that share a receiver share its lane.
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook URL must be http(s)://host/...: {self.redacted}")
        try:  # as the HTTP client will parse it
            host = URL(self.url).raw_host
        except ValueError:
            host = None
        if not host:
            raise ValueError(f"webhook URL does not parse as http(s)://host/...: {self.redacted}")
        if self.format not in FORMATS:
            raise ValueError(f"unknown webhook format {self.format!r}; one of {FORMATS}")
        if self.events is not None:
            unknown = set(self.events) - set(KINDS)
            if unknown:
                raise ValueError(f"unknown notification kinds {sorted(unknown)}")
            # A set or list given by a caller still hashes and compares as a frozenset.
            object.__setattr__(self, "events", frozenset(self.events))

    @classmethod
    def of(
        cls,
        url: str,
        format: str = "json",
        events: Iterable[str] | None = None,
        source: str = "",
    ) -> WebhookTarget:
        """Build from loosely typed input (a Rollout's spec); ``__post_init__`` checks it."""
        kinds = None if events is None else cast(frozenset[Kind], frozenset(events))
        return cls(url, cast(Format, format), kinds, source)

    @property
    def host(self) -> str:
        """The host the HTTP client connects to, as it parses the URL (an IPv6 address
        without brackets)."""
        return URL(self.url).raw_host or ""

    def wants(self, kind: Kind) -> bool:
        return self.events is None or kind in self.events

    @property
    def redacted(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}/..."

    def __repr__(self) -> str:
        events = "all" if self.events is None else sorted(self.events)
        return f"WebhookTarget({self.redacted}, format={self.format}, events={events})"
