"""Phase groupings live in one place (segue.api.phases), and every phase change is one
structured PhaseChanged action."""

from __future__ import annotations

from datetime import timedelta

import pytest

from segue.api import PHASES
from segue.api.phases import (
    ACTIVE,
    ANALYSED,
    NOTHING_TO_UNDO,
    STEPPING,
    TERMINAL,
    WARNING,
    event_type,
)
from segue.api.status import PausedReason, Phase
from segue.engine import EmitEvent, PhaseChanged
from segue.engine.context import ACTIVE_PHASES, STEPPING_PHASES
from tests.unit.conftest import Sim, actions_of, analysis, gate_round, make_spec, verdict


def test_groupings_partition_and_nest() -> None:
    assert set(PHASES) == TERMINAL | ACTIVE and not TERMINAL & ACTIVE
    assert STEPPING < ANALYSED < ACTIVE
    assert STEPPING | {"RollingBack"} == ANALYSED
    assert set(PHASES) >= WARNING
    assert NOTHING_TO_UNDO - {None} <= set(PHASES)
    assert not NOTHING_TO_UNDO & ANALYSED  # traffic may be split there: undo it
    assert "Failed" not in NOTHING_TO_UNDO  # a spec can turn invalid mid-rollout
    # The engine's old names still work.
    assert ACTIVE_PHASES == ACTIVE and STEPPING_PHASES == STEPPING


@pytest.mark.parametrize(
    ("phase", "reason", "expected"),
    [
        ("Pending", None, "Normal"),
        ("Progressing", None, "Normal"),
        ("AwaitingApproval", None, "Normal"),
        ("Succeeded", None, "Normal"),
        ("Paused", "Manual", "Normal"),
        ("Paused", "GateFailed", "Warning"),
        ("Paused", "NoData", "Warning"),
        ("RollingBack", None, "Warning"),
        ("RolledBack", None, "Warning"),
        ("Failed", None, "Warning"),
    ],
)
def test_event_type(phase: Phase, reason: PausedReason | None, expected: str) -> None:
    assert event_type(phase, reason) == expected


def test_a_phase_change_is_one_structured_action_and_no_bare_event() -> None:
    sim = Sim(make_spec(risk="low"))
    sim.tick()
    sim.annotations["segue.dev/pause"] = ""
    d = sim.tick(1)
    (change,) = actions_of(d, PhaseChanged)
    assert change == PhaseChanged(
        old="Progressing",
        new="Paused",
        paused_reason="Manual",
        message="paused by annotation segue.dev/pause; remove it to resume",
        actor="segue.dev/pause",
        verdict=None,
        at=sim.now,
    )
    assert not [e for e in actions_of(d, EmitEvent) if e.reason == "Paused"]
    assert sim.st.history[-1].event == "Paused"
    assert not actions_of(sim.tick(1), PhaseChanged)  # staying paused changes nothing


def test_a_gate_rollback_names_its_gate_and_verdict() -> None:
    sim = Sim(make_spec(risk="low", analysis=analysis()))
    sim.tick()
    sim.passing_round()
    sim.tick(1)
    failing = verdict("errors", "Fail", value=0.2)
    sim.gates = gate_round(sim.now, failing)
    d = sim.tick(1)
    change = actions_of(d, PhaseChanged)[0]
    assert (change.old, change.new, change.actor) == ("Progressing", "RollingBack", "gate errors")
    assert change.verdict == failing
    assert "gate errors failed 1/1" in change.message
    assert event_type(change.new, change.paused_reason) == "Warning"


def test_a_change_of_pause_reason_is_a_phase_change() -> None:
    gate = {"name": "errors", "query": "errors", "max": 0.05}
    sim = Sim(make_spec(risk="low", hold="1s", analysis=analysis(gate)))
    sim.tick()
    sim.passing_round()
    sim.tick(1)
    sim.gates = gate_round(
        sim.now + timedelta(seconds=5), verdict("errors", "Inconclusive", value=None)
    )
    sim.tick(5)
    assert (sim.phase(), sim.paused_reason()) == ("Paused", "NoData")
    sim.annotations["segue.dev/pause"] = ""
    d = sim.tick(1)
    (change,) = actions_of(d, PhaseChanged)
    assert (change.old, change.new, change.paused_reason) == ("Paused", "Paused", "Manual")
