"""Builders shared by the API and engine tests: specs, observations, gate rounds, and a
small simulation in which the router follows SetWeight, annotations get cleared and the
finalizer gets released.

Hypothesis profiles: ``ci`` (the default, used by ``make test``) is derandomized, so every
run tries the same examples; ``HYPOTHESIS_PROFILE=random`` draws new ones each run and tries
more of them, for long hunts.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import settings

from segue.analysis.clients import close_clients
from segue.api import GateStatus, RolloutSpec, RolloutStatus
from segue.api.phases import event_type
from segue.api.routing import Segment
from segue.engine import (
    ClearAnnotation,
    Decision,
    EmitEvent,
    GateRound,
    Observations,
    PhaseChanged,
    ReleaseFinalizer,
    SetWeight,
    decide,
    invalid_spec,
)

settings.register_profile("ci", derandomize=True, database=None, max_examples=150)
settings.register_profile("random", derandomize=False, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

T = TypeVar("T")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def spec_dict(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "legacy": {"deployment": "checkout-v1"},
        "new": {"deployment": "checkout-v2"},
        "traffic": {
            "gatewayAPI": {
                "httpRoute": "checkout",
                "legacyBackend": "checkout-v1",
                "newBackend": "checkout-v2",
            }
        },
        "risk": "low",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def make_spec(**overrides: Any) -> RolloutSpec:
    return RolloutSpec.model_validate(spec_dict(**overrides))


def analysis(*gates: dict[str, Any], **extra: Any) -> dict[str, Any]:
    if not gates:
        gates = ({"name": "errors", "query": "errors", "max": 0.05},)
    return {"interval": "30s", "gates": list(gates), **extra}


def verdict(
    name: str = "errors",
    result: str = "Pass",
    *,
    on_failure: str = "rollback",
    limit: int = 1,
    value: float | None = 0.01,
    legacy: float | None = 0.01,
    bound: str = "<= 0.05",
    message: str = "",
) -> GateStatus:
    """A gate's status as a provider returns it for one round."""
    return GateStatus(
        name=name,
        verdict=result,
        value=value,
        legacy_value=legacy,
        bound=bound,
        on_failure=on_failure,
        failure_limit=limit,
        message=message or f"{name} {result.lower()}",
    )


def gate_round(at: datetime, *verdicts: GateStatus, error: str | None = None) -> GateRound:
    return GateRound(evaluated_at=at, results=tuple(verdicts), error=error)


def observe(**overrides: Any) -> Observations:
    values: dict[str, Any] = {
        "now": T0,
        "generation": 1,
        "new_revision": "r1",
        "router_weight": 0,
        "legacy_ready": 3,
        "new_ready": 3,
        "legacy_desired": 3,
    }
    values.update(overrides)
    return Observations(**values)


@dataclass
class Sim:
    """A Rollout against a router that applies SetWeight at once (unless ``follow`` is off)
    and a controller that clears annotations as asked."""

    spec: RolloutSpec
    now: datetime = T0
    status: RolloutStatus | None = None
    router: int | None = 0
    # The segment the router reads back (it follows SetWeight's segment like its weight).
    segment: Segment | None = None
    legacy_ready: int = 3
    new_ready: int = 3
    manages_capacity: bool = False
    legacy_desired: int = 3
    annotations: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    new_missing: bool = False
    legacy_missing: bool = False
    router_missing: bool = False
    # Objects the router writes to that lack segue.dev/managed=true (the operator requires it).
    unmanaged: tuple[tuple[str, str, str], ...] = ()
    deps: tuple[str, ...] = ()
    deps_rolled_back: tuple[str, ...] = ()
    revision: str = "r1"
    generation: int = 1
    gates: GateRound | None = None
    deleting_since: datetime | None = None
    follow: bool = True
    last: Decision | None = None
    events: list[EmitEvent] = field(default_factory=list)
    changes: list[PhaseChanged] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    released: bool = False

    def obs(self) -> Observations:
        return Observations(
            now=self.now,
            generation=self.generation,
            new_revision=self.revision,
            router_weight=None if self.router_missing else self.router,
            legacy_ready=0 if self.legacy_missing else self.legacy_ready,
            new_ready=0 if self.new_missing else self.new_ready,
            legacy_desired=0 if self.legacy_missing else self.legacy_desired,
            router_manages_capacity=self.manages_capacity,
            router_segment=self.segment,
            annotations=dict(self.annotations),
            missing=self.missing,
            new_missing=self.new_missing,
            legacy_missing=self.legacy_missing,
            router_missing=self.router_missing,
            unmanaged=self.unmanaged,
            dependencies_pending=self.deps,
            dependencies_rolled_back=self.deps_rolled_back,
            gates=self.gates,
            deleting=self.deleting_since is not None,
            deleting_since=self.deleting_since,
        )

    def tick(self, seconds: float = 0.0) -> Decision:
        self.now += timedelta(seconds=seconds)
        return self.apply(decide(self.spec, self.status, self.obs()))

    def invalid(self, message: str, seconds: float = 0.0, *, routable: bool = True) -> Decision:
        """A pass with a spec that does not parse (the spec kept here is not read)."""
        self.now += timedelta(seconds=seconds)
        return self.apply(invalid_spec(self.status, self.obs(), message=message, routable=routable))

    def apply(self, d: Decision) -> Decision:
        """Apply a decision as the controller would: status first, then the actions."""
        self.last = d
        self.status = d.status
        for action in d.actions:
            if isinstance(action, SetWeight):
                self.weights.append(action.weight)
                if self.follow and not self.router_missing:
                    self.router = action.weight
                    self.segment = action.segment
            elif isinstance(action, ClearAnnotation):
                self.annotations.pop(action.key, None)
            elif isinstance(action, PhaseChanged):
                self.changes.append(action)
            elif isinstance(action, ReleaseFinalizer):
                self.released = True
            else:
                self.events.append(action)
        return d

    def passing_round(self) -> GateRound:
        """A round, evaluated now, in which every gate of the spec passes."""
        assert self.spec.analysis is not None
        self.gates = gate_round(self.now, *(verdict(g.name) for g in self.spec.analysis.gates))
        return self.gates

    def run(self, until: Callable[[Sim], bool], max_ticks: int = 200) -> Decision:
        """Tick, jumping the clock by requeue_after (1 s when none), until ``until``."""
        d = self.tick()
        for _ in range(max_ticks):
            if until(self):
                return d
            if self.spec.analysis is not None:
                self.passing_round()
            d = self.tick(d.requeue_after or 1.0)
        raise AssertionError(f"not reached; status {self.st.phase} {self.st.message}")

    @property
    def st(self) -> RolloutStatus:
        assert self.status is not None
        return self.status

    def phase(self) -> str | None:
        return self.st.phase

    def paused_reason(self) -> str | None:
        return self.st.paused_reason

    def rollback_mode(self) -> str | None:
        return self.st.rollback.mode if self.st.rollback is not None else None

    def history_events(self) -> list[str]:
        return [h.event for h in self.st.history]

    def history_events_text(self) -> str:
        return "\n".join(h.reason or "" for h in self.st.history)

    def delete(self) -> None:
        """The Rollout gets a deletionTimestamp (now)."""
        self.deleting_since = self.now


def actions_of(d: Decision, kind: type[Any]) -> list[Any]:
    return [a for a in d.actions if isinstance(a, kind)]


def weights_of(d: Decision) -> list[int]:
    return [a.weight for a in d.actions if isinstance(a, SetWeight)]


def warnings_of(d: Decision) -> list[str]:
    """Reasons of the Warning Events in ``d``, phase changes included."""
    reasons = []
    for a in d.actions:
        if isinstance(a, EmitEvent) and a.type == "Warning":
            reasons.append(a.reason)
        elif isinstance(a, PhaseChanged) and event_type(a.new, a.paused_reason) == "Warning":
            reasons.append(a.new)
    return reasons


# -- bulkhead tests: a server that never answers, a clean provider cache, a trap for
# -- anything that uses asyncio's default executor


@pytest.fixture
def no_cached_providers() -> Iterator[None]:
    close_clients()
    yield
    close_clients()


@pytest.fixture
def silent() -> Iterator[str]:
    """A server that accepts connections (the kernel does) and never answers. Closing it
    at the end resets the connections, so no worker thread outlives the test for long."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


class NoDefaultExecutor(ThreadPoolExecutor):
    """Installed as the loop's default executor: records any use of it."""

    used: list[str]

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.used = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.used.append(getattr(fn, "__name__", repr(fn)))
        return super().submit(fn, *args, **kwargs)
