"""Conditions are kstatus-compatible and only move lastTransitionTime on a flip."""

from __future__ import annotations

from tests.unit.conftest import T0, Sim, make_spec


def _conditions(sim: Sim) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in sim.st.conditions}


def test_progressing_rollout() -> None:
    sim = Sim(make_spec(risk="low"))
    sim.tick()
    c = _conditions(sim)
    assert c["Ready"][0] == "False"
    assert c["Progressing"] == ("True", "WaitingForRouter")
    assert c["Reconciling"] == ("True", "WaitingForRouter")
    assert c["Stalled"][0] == "False"
    assert c["Healthy"] == ("Unknown", "NoAnalysis")


def test_last_transition_time_moves_only_on_a_flip() -> None:
    sim = Sim(make_spec(risk="low", hold="1m"))
    sim.tick()
    first = sim.st.condition("Progressing")
    assert first is not None and first.last_transition_time == T0
    sim.tick(5)
    sim.tick(5)
    now = sim.st.condition("Progressing")
    assert now is not None and now.reason == "Holding"
    assert now.last_transition_time == T0
    sim.run(lambda s: s.phase() == "Succeeded")
    done = sim.st.condition("Progressing")
    ready = sim.st.condition("Ready")
    assert done is not None and ready is not None
    assert done.status == "False" and done.last_transition_time == sim.now
    assert ready.status == "True" and ready.last_transition_time == sim.now


def test_awaiting_approval_is_not_stalled() -> None:
    sim = Sim(make_spec(risk=None, steps=[{"approval": {}}]))
    sim.tick()
    assert sim.phase() == "AwaitingApproval"
    c = _conditions(sim)
    assert c["Stalled"][0] == "False"
    assert c["Reconciling"] == ("True", "AwaitingApproval")


def test_waiting_for_dependencies() -> None:
    sim = Sim(make_spec(risk="low"), deps=("a",))
    sim.tick()
    assert _conditions(sim)["Progressing"] == ("True", "WaitingForDependencies")
