"""The working state of one decision: a private copy of the status being rewritten, and
the actions, events and history entries the decision produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from segue.api.phases import ACTIVE, STEPPING
from segue.api.plan import plan as expand_plan
from segue.api.routing import Segment
from segue.api.spec import RolloutSpec, Step
from segue.api.status import (
    MAX_HISTORY,
    GateStatus,
    HistoryEntry,
    PausedReason,
    Phase,
    RolloutStatus,
)
from segue.engine.types import (
    Action,
    ClearAnnotation,
    Decision,
    EmitEvent,
    EventType,
    Observations,
    PhaseChanged,
    ReleaseFinalizer,
    SetWeight,
)

# Kept for existing imports; the groupings live in segue.api.phases.
ACTIVE_PHASES: Final[frozenset[Phase]] = ACTIVE
STEPPING_PHASES: Final[frozenset[Phase]] = STEPPING
ACTOR: Final = "segue"
# The shortest wait the engine asks for: a deadline that has just passed is acted on in the
# same call, so this only keeps rounding from spinning.
MIN_REQUEUE_SECONDS: Final = 0.01


def format_time(value: datetime) -> str:
    """Second precision for messages; status fields keep full precision."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()


@dataclass
class Outcome:
    """Where a handler settles the phase this call, and why."""

    phase: Phase
    message: str
    paused_reason: PausedReason | None = None
    # Reason on the Progressing/Reconciling conditions while waiting (default: the phase).
    reason: str | None = None
    requeue: float | None = None
    actor: str = ACTOR


@dataclass
class Recorder:
    """Status copy plus the side effects of one decision."""

    status: RolloutStatus
    now: datetime
    generation: int
    actions: list[Action] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)
    progress_reason: str | None = None

    def set_weight(self, weight: int, segment: Segment | None = None) -> None:
        """Ask for ``weight`` and ``segment``. Only the plan's progress keeps a segment;
        every other caller (rollbacks, aborts, deletion) asks with none, so the router
        removes the segment rule in the same write that moves the weight back."""
        weight = max(0, min(100, weight))
        # One weight per decision: a later request replaces an earlier one.
        self.actions = [a for a in self.actions if not isinstance(a, SetWeight)]
        self.actions.append(SetWeight(weight, segment))

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type_, reason, message))

    def clear_annotation(self, key: str) -> None:
        if ClearAnnotation(key) not in self.actions:
            self.actions.append(ClearAnnotation(key))

    def release_finalizer(self) -> None:
        if ReleaseFinalizer() not in self.actions:
            self.actions.append(ReleaseFinalizer())

    def wake_in(self, seconds_: float | None) -> None:
        """Ask to be called again after ``seconds_``: a deadline (a hold's end, a ramp's
        next step), kept to the millisecond so a step starts when its hold ends."""
        if seconds_ is not None:
            self.requeue.append(max(MIN_REQUEUE_SECONDS, seconds_))

    def record(
        self,
        event: str,
        reason: str | None = None,
        actor: str = ACTOR,
        verdict: GateStatus | None = None,
    ) -> None:
        entry = HistoryEntry(
            time=self.now,
            step=self.status.step,
            weight=self.status.weight,
            event=event,
            reason=reason,
            actor=actor,
        )
        if verdict is not None:
            entry.gate = verdict.name
            entry.value = verdict.value
            entry.legacy_value = verdict.legacy_value
            entry.bound = verdict.bound
        self.status.history.append(entry)

    def enter(
        self,
        phase: Phase,
        message: str,
        paused_reason: PausedReason | None = None,
        actor: str = ACTOR,
        verdict: GateStatus | None = None,
    ) -> bool:
        """Set the phase; a change (of phase or pause reason) is one ``PhaseChanged`` and one
        history entry. Returns whether it changed."""
        st = self.status
        st.message = message
        if phase != "Paused":
            paused_reason = None
        if st.phase == phase and st.paused_reason == paused_reason:
            return False
        old = st.phase
        st.phase = phase
        st.paused_reason = paused_reason
        self.actions.append(
            PhaseChanged(
                old=old,
                new=phase,
                paused_reason=paused_reason,
                message=message,
                actor=actor,
                verdict=verdict,
                at=self.now,
            )
        )
        self.record(phase, message, actor, verdict)
        return True

    def settle(self, outcome: Outcome) -> None:
        self.enter(outcome.phase, outcome.message, outcome.paused_reason, actor=outcome.actor)
        self.progress_reason = outcome.reason
        self.wake_in(outcome.requeue)

    def decision(self) -> Decision:
        self.status.history = self.status.history[-MAX_HISTORY:]
        st = self.status
        if st.phase not in STEPPING or st.rollback is not None or st.target_weight >= 100:
            st.segment = None  # a segment lives only while the plan is walked below 100%
        # Annotations are cleared after everything else (the controller writes the status
        # first), and the finalizer goes last of all: after it the object may be gone.
        ordered = (
            [a for a in self.actions if not isinstance(a, ClearAnnotation | ReleaseFinalizer)]
            + [a for a in self.actions if isinstance(a, ClearAnnotation)]
            + [a for a in self.actions if isinstance(a, ReleaseFinalizer)]
        )
        return Decision(
            status=self.status,
            actions=tuple(ordered),
            requeue_after=min(self.requeue) if self.requeue else None,
        )


@dataclass
class Context(Recorder):
    """A Recorder that also knows the spec, its plan and the observations."""

    spec: RolloutSpec = field(kw_only=True)
    plan: list[Step] = field(kw_only=True)
    obs: Observations = field(kw_only=True)
    manual_pause: bool = False
    # Who set segue.dev/pause: its companion's user name, else the annotation's key.
    pause_actor: str = "segue.dev/pause"

    @classmethod
    def create(cls, spec: RolloutSpec, status: RolloutStatus, obs: Observations) -> Context:
        return cls(
            status=status,
            now=obs.now,
            generation=obs.generation,
            spec=spec,
            plan=expand_plan(spec),
            obs=obs,
        )

    def current_weight(self) -> int:
        """The router's weight if it could be read, else the last one it reported."""
        if self.obs.router_weight is not None:
            return max(0, min(100, self.obs.router_weight))
        return self.status.weight

    def capacity_blocker(self, current: int | None, target: int) -> Outcome | None:
        """A weight change needs ready pods on the side that gains traffic, unless the router
        realises the weight by scaling (then ordering is its job), or the new Deployment is
        gone (its pods are gone too: any share moved to legacy is better than none).

        Pods becoming ready is a watch event, so the wait asks for no timed wake-up."""
        obs = self.obs
        if current is not None and current == target:
            return None
        raising = current is not None and target > current
        if not raising and obs.legacy_missing:
            name = self.spec.legacy.deployment
            return Outcome(
                "Progressing",
                f"Deployment {name} (legacy) not found: no traffic moves back to it "
                f"(new version at {target}%)",
                reason="WaitingForCapacity",
            )
        if obs.router_manages_capacity:
            return None
        if raising and (obs.new_ready <= 0 or obs.new_missing):
            name = self.spec.new.deployment
            return Outcome(
                "Progressing",
                f"waiting for ready pods of Deployment {name} before moving {target}% of "
                "traffic to the new version",
                reason="WaitingForCapacity",
            )
        if not raising and obs.legacy_ready <= 0 and not obs.new_missing:
            name = self.spec.legacy.deployment
            return Outcome(
                "Progressing",
                f"waiting for ready pods of Deployment {name} before moving traffic back to "
                f"the legacy version (new version at {target}%)",
                reason="WaitingForCapacity",
            )
        return None
