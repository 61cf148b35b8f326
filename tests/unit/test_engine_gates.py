"""Gate rounds: counting once, streaks, onFailure policies, no data, unreachable provider."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from segue.api import RolloutStatus
from segue.engine import SetWeight
from tests.unit.conftest import Sim, analysis, gate_round, make_spec, verdict, warnings_of

ERRORS = {"name": "errors", "query": "errors", "max": 0.05}
LATENCY = {"name": "latency", "query": "latency", "maxRatioToLegacy": 2.0}


def _sim(*gates: dict[str, Any], risk: str = "low", hold: str | None = None, **extra: Any) -> Sim:
    """At the first weight, confirmed, holding; rounds at will."""
    sim = Sim(make_spec(risk=risk, hold=hold, analysis=analysis(*gates, **extra)))
    sim.tick()
    sim.tick(1)
    assert sim.st.step == 1 and sim.router == (5 if risk == "medium" else 10)
    return sim


def _gate(sim: Sim, name: str) -> Any:
    return next(g for g in sim.st.gates if g.name == name)


def test_a_round_counts_once() -> None:
    sim = _sim({**ERRORS, "failureLimit": 3})
    sim.gates = gate_round(sim.now, verdict("errors", "Fail", limit=3, value=0.2))
    sim.tick(1)
    sim.tick(1)
    sim.tick(1)
    g = _gate(sim, "errors")
    assert g.consecutive_failures == 1
    assert g.value == 0.2 and g.bound == "<= 0.05" and g.verdict == "Fail"
    assert g.last_evaluated == sim.gates.evaluated_at
    assert sim.phase() == "Progressing"


def test_the_providers_status_is_kept_and_the_round_left_as_delivered() -> None:
    sim = _sim({**ERRORS, "failureLimit": 3})
    result = verdict("errors", "Fail", limit=3, value=0.2, message="0.2 > max 0.05")
    sim.gates = gate_round(sim.now, result)
    sim.tick(1)
    g = _gate(sim, "errors")
    assert (g.message, g.on_failure, g.failure_limit, g.legacy_value) == (
        "0.2 > max 0.05",
        "rollback",
        3,
        0.01,
    )
    assert g.consecutive_failures == 1 and g is not result
    # The round is an observation: counting it changes the status, never the round.
    assert (result.consecutive_failures, result.last_evaluated) == (0, None)


def test_pass_resets_streaks_and_no_data_counts_apart() -> None:
    sim = _sim({**ERRORS, "failureLimit": 3})
    sim.gates = gate_round(sim.now, verdict("errors", "Fail", limit=3))
    sim.tick(1)
    sim.gates = gate_round(sim.now, verdict("errors", "Inconclusive", limit=3, value=None))
    sim.tick(1)
    g = _gate(sim, "errors")
    assert (g.consecutive_failures, g.consecutive_no_data) == (1, 1)
    sim.gates = gate_round(sim.now, verdict("errors", "Error", limit=3, value=None))
    sim.tick(1)
    assert (g := _gate(sim, "errors")).consecutive_no_data == 2
    sim.gates = gate_round(sim.now, verdict("errors", "Pass", limit=3))
    sim.tick(1)
    g = _gate(sim, "errors")
    assert (g.consecutive_failures, g.consecutive_no_data) == (0, 0)


def test_failure_at_limit_rolls_back_immediately_with_the_numbers() -> None:
    sim = _sim(ERRORS)
    sim.gates = gate_round(sim.now, verdict("errors", "Fail", value=0.12, legacy=0.01))
    d = sim.tick(1)
    assert sim.phase() == "RollingBack"
    assert [a for a in d.actions if isinstance(a, SetWeight)] == [SetWeight(0)]
    entry = next(h for h in sim.st.history if h.event == "RollingBack")
    assert (entry.gate, entry.value, entry.legacy_value, entry.bound) == (
        "errors",
        0.12,
        0.01,
        "<= 0.05",
    )
    assert entry.reason is not None and "gate errors failed 1/1" in entry.reason
    assert sim.st.rollback is not None and sim.st.rollback.mode == "immediate"
    assert sim.st.rollback.from_weight == 10
    sim.tick(1)
    assert sim.phase() == "RolledBack"
    healthy = sim.st.condition("Healthy")
    assert healthy is not None and healthy.status == "False"


def test_on_failure_rollback_graceful_rolls_back_gracefully() -> None:
    sim = _sim({**LATENCY, "onFailure": "rollback-graceful"})
    sim.gates = gate_round(sim.now, verdict("latency", "Fail", on_failure="rollback-graceful"))
    sim.tick(1)
    assert sim.st.rollback is not None and sim.st.rollback.mode == "graceful"


def test_failure_below_limit_holds_but_does_not_act() -> None:
    sim = _sim({**ERRORS, "failureLimit": 2}, hold="1s")
    sim.gates = gate_round(sim.now + timedelta(seconds=5), verdict("errors", "Fail", limit=2))
    d = sim.tick(5)  # the hold is over, but a gate fails
    assert not any(isinstance(a, SetWeight) for a in d.actions)
    assert sim.st.step == 1 and sim.phase() == "Progressing"
    assert "gate errors failing (1/2)" in (sim.st.message or "")


def test_on_failure_pause_pauses_and_resumes_when_the_gate_passes() -> None:
    sim = _sim({**LATENCY, "onFailure": "pause", "failureLimit": 2})
    for _ in range(2):
        sim.gates = gate_round(sim.now, verdict("latency", "Fail", on_failure="pause", limit=2))
        d = sim.tick(1)
    assert sim.phase() == "Paused" and sim.st.paused_reason == "GateFailed"
    assert "gate latency failed 2/2" in (sim.st.message or "")
    assert warnings_of(d) == ["Paused"]
    sim.gates = gate_round(sim.now, verdict("latency", "Pass", on_failure="pause", limit=2))
    sim.tick(1)
    assert sim.phase() == "Progressing"
    # The observation window starts over after the gate recovered.
    assert sim.st.step_started_at == sim.now


def test_a_failing_round_never_advances_even_a_confirmed_weight() -> None:
    sim = Sim(make_spec(risk="low", analysis=analysis({**ERRORS, "failureLimit": 5})))
    sim.tick()  # asks for 10%
    sim.gates = gate_round(sim.now, verdict("errors", "Fail", limit=5))
    sim.tick(1)  # the router reports 10%, but a gate fails
    assert sim.st.step == 0 and sim.st.step_started_at is None
    sim.gates = gate_round(sim.now, verdict("errors", "Pass", limit=5))
    sim.tick(1)
    assert sim.st.step == 1


def test_no_data_never_promotes_and_clears_itself() -> None:
    sim = _sim(ERRORS, hold="1s")
    sim.gates = gate_round(sim.now + timedelta(seconds=2), verdict("errors", "Inconclusive"))
    d = sim.tick(2)
    assert not any(isinstance(a, SetWeight) for a in d.actions)
    assert sim.phase() == "Paused" and sim.st.paused_reason == "NoData"
    sim.gates = gate_round(sim.now, verdict("errors", "Error"))
    sim.tick(1)
    assert sim.paused_reason() == "QueryError"
    sim.passing_round()
    d = sim.tick(1)
    assert sim.phase() == "Progressing"
    assert SetWeight(25) in d.actions


def test_no_data_fail_policy_counts_inconclusive_as_failure() -> None:
    sim = _sim(ERRORS, noData="fail")
    sim.gates = gate_round(sim.now, verdict("errors", "Inconclusive", value=None))
    sim.tick(1)
    assert sim.phase() == "RollingBack"


def test_rounds_at_weight_0_are_not_counted() -> None:
    sim = Sim(make_spec(risk="low", analysis=analysis(ERRORS, noData="fail")), follow=False)
    sim.tick()
    sim.gates = gate_round(sim.now, verdict("errors", "Inconclusive", value=None))
    sim.tick(1)
    assert sim.phase() == "Progressing"
    assert _gate(sim, "errors").consecutive_failures == 0


def test_advancing_needs_a_round_after_the_step_started() -> None:
    sim = _sim(ERRORS, hold="10s")
    sim.passing_round()  # evaluated at the confirmation
    sim.gates = gate_round(sim.now - timedelta(seconds=1), verdict("errors"))
    d = sim.tick(10)
    assert not any(isinstance(a, SetWeight) for a in d.actions)
    assert "waiting for an analysis round after" in (sim.st.message or "")
    sim.passing_round()
    assert SetWeight(25) in sim.tick(1).actions


def test_a_gate_missing_from_the_round_is_no_data() -> None:
    sim = _sim(ERRORS, LATENCY, hold="1s")
    sim.gates = gate_round(sim.now + timedelta(seconds=2), verdict("errors"))
    sim.tick(2)
    assert sim.st.paused_reason == "NoData"
    assert "latency: not evaluated" in (sim.st.message or "")


def test_unreachable_provider_pauses_after_the_limit_and_resumes() -> None:
    sim = _sim(ERRORS, unreachableLimit="1m")
    start = sim.now
    sim.gates = gate_round(start, verdict("errors", "Error"), error="connection refused")
    sim.tick(0)
    assert sim.st.analysis_unreachable_since == start
    assert sim.phase() == "Progressing"
    sim.gates = gate_round(start + timedelta(seconds=61), error="connection refused")
    sim.tick(61)
    assert sim.st.analysis_unreachable_since == start
    assert sim.phase() == "Paused" and sim.st.paused_reason == "AnalysisUnavailable"
    sim.passing_round()
    sim.tick(1)
    assert sim.phase() == "Progressing"
    assert sim.st.analysis_unreachable_since is None


def test_immediate_failure_escalates_a_graceful_rollback() -> None:
    sim = _sim(
        {**LATENCY, "onFailure": "rollback-graceful"},
        {**ERRORS, "onFailure": "rollback"},
        risk="medium",
    )
    sim.gates = gate_round(
        sim.now, verdict("latency", "Fail", on_failure="rollback-graceful"), verdict("errors")
    )
    sim.tick(1)
    assert sim.st.rollback is not None and sim.st.rollback.mode == "graceful"
    assert sim.router == 5  # the ramp starts where traffic is
    sim.gates = gate_round(
        sim.now,
        verdict("latency", "Fail", on_failure="rollback-graceful"),
        verdict("errors", "Fail", value=0.3),
    )
    d = sim.tick(1)
    assert sim.rollback_mode() == "immediate"
    assert SetWeight(0) in d.actions
    entry = next(h for h in sim.st.history if h.event == "RollbackEscalated")
    assert entry.gate == "errors" and entry.value == 0.3


def test_gate_rollbacks_happen_while_paused_by_hand() -> None:
    sim = _sim(ERRORS)
    sim.annotations["segue.dev/pause"] = ""
    sim.tick(1)
    assert sim.phase() == "Paused"
    sim.gates = gate_round(sim.now, verdict("errors", "Fail"))
    sim.tick(1)
    assert sim.phase() == "RollingBack"


def test_healthy_condition() -> None:
    sim = _sim(ERRORS)
    healthy = sim.st.condition("Healthy")
    assert healthy is not None and healthy.status == "Unknown"
    sim.passing_round()
    sim.tick(1)
    healthy = sim.st.condition("Healthy")
    assert healthy is not None and (healthy.status, healthy.reason) == ("True", "GatesPassing")
    no_analysis = Sim(make_spec(risk="low"))
    no_analysis.tick()
    healthy = no_analysis.st.condition("Healthy")
    assert healthy is not None and (healthy.status, healthy.reason) == ("Unknown", "NoAnalysis")


def test_gate_statuses_follow_the_spec() -> None:
    sim = _sim(ERRORS, LATENCY)
    assert [g.name for g in sim.st.gates] == ["errors", "latency"]
    sim.spec = make_spec(risk="low", analysis=analysis(LATENCY))
    sim.tick(1)
    assert [g.name for g in sim.st.gates] == ["latency"]
    sim.spec = make_spec(risk="low")
    sim.tick(1)
    assert sim.st.gates == []


def test_a_duplicated_round_never_counts_twice() -> None:
    sim = _sim({**ERRORS, "failureLimit": 3})
    first = gate_round(sim.now, verdict("errors", "Fail", limit=3))
    sim.gates = first
    sim.tick(1)
    assert _gate(sim, "errors").consecutive_failures == 1
    # The status goes through the API server (a restart, a lost write): the same round,
    # delivered again, does not count.
    sim.status = RolloutStatus.model_validate(sim.st.to_wire())
    sim.tick(1)
    # A second copy of the round (another process evaluated it at the same time), with a
    # different verdict object, does not count either.
    sim.gates = gate_round(first.evaluated_at, verdict("errors", "Fail", limit=3, value=0.9))
    sim.tick(1)
    g = _gate(sim, "errors")
    assert g.consecutive_failures == 1 and g.last_evaluated == first.evaluated_at
    assert g.value == 0.01  # what the counted round said


def test_a_round_older_than_the_last_counted_changes_nothing() -> None:
    sim = _sim({**ERRORS, "failureLimit": 3}, unreachableLimit="1m")
    sim.gates = gate_round(sim.now, verdict("errors", "Pass", limit=3))
    sim.tick(1)
    late = sim.now - timedelta(seconds=30)
    sim.gates = gate_round(late, verdict("errors", "Fail", limit=3))
    sim.tick(1)
    assert _gate(sim, "errors").consecutive_failures == 0
    sim.gates = gate_round(late, error="unreachable")
    sim.tick(1)
    assert sim.st.analysis_unreachable_since is None  # a stale round starts no outage


def test_a_round_seen_at_weight_0_holds_nothing() -> None:
    # The property test's counterexample: steps [pause 1s], a failing round observed at
    # weight 0. Rounds run and count only with traffic on the new version, so such a round
    # predates it and says nothing about what comes next.
    gate = {**ERRORS, "failureLimit": 2}
    sim = Sim(make_spec(risk=None, steps=[{"pause": {"duration": "1s"}}], analysis=analysis(gate)))
    sim.tick()
    sim.gates = gate_round(sim.now, verdict("errors", "Fail", limit=2))
    sim.tick(1)
    assert sim.st.step == 1 and sim.weights == [100]
    assert "holding" not in (sim.st.message or "")
    assert _gate(sim, "errors").consecutive_failures == 0  # and it was not counted


def test_a_restart_is_not_held_by_the_round_before_it() -> None:
    sim = _sim({**ERRORS, "failureLimit": 3}, hold="1h")
    sim.gates = gate_round(sim.now, verdict("errors", "Fail", limit=3))
    sim.tick(1)
    assert _gate(sim, "errors").consecutive_failures == 1
    sim.revision = "r2"
    sim.tick(1)  # back to 0 for the new revision; no round runs at 0
    assert sim.router == 0
    d = sim.tick(1)
    assert SetWeight(10) in d.actions  # the old round (failing) holds nothing at 0
