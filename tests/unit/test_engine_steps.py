"""Walking the plan: start, weights, holds, approvals, promotion, dependencies, missing
objects, new revisions."""

from __future__ import annotations

from datetime import timedelta

from segue.engine import ClearAnnotation, EmitEvent, PhaseChanged, SetWeight, decide
from tests.unit.conftest import T0, Sim, analysis, make_spec, observe


def test_first_call_starts_and_sets_the_first_weight() -> None:
    d = decide(make_spec(risk="medium"), None, observe())
    st = d.status
    assert st.phase == "Progressing"
    assert (st.step, st.total_steps, st.target_weight) == (0, 11, 5)
    assert st.new_revision == "r1"
    assert st.observed_generation == 1
    assert SetWeight(5) in d.actions
    changes = [(a.old, a.new) for a in d.actions if isinstance(a, PhaseChanged)]
    assert changes == [(None, "Pending"), ("Pending", "Progressing")]
    assert not any(isinstance(a, EmitEvent) for a in d.actions)
    assert [h.event for h in st.history] == ["Pending", "Progressing"]
    # Waiting for the router to report 5% ends with a watch event, not a timer.
    assert d.requeue_after is None


def test_weight_counts_only_once_the_router_reports_it() -> None:
    sim = Sim(make_spec(risk="low"), follow=False)
    sim.tick()
    assert sim.st.target_weight == 10 and sim.st.step == 0
    d = sim.tick(5)
    assert SetWeight(10) in d.actions  # asked again: idempotent, survives a lost write
    assert sim.st.step == 0 and sim.st.step_started_at is None
    assert "waiting for the router" in (sim.st.message or "")
    sim.router = 10
    sim.tick(5)
    assert sim.st.step == 1
    assert sim.st.step_started_at == sim.now
    assert sim.st.weight == 10
    assert "WeightSet" in sim.history_events()


def test_hold_then_next_weight() -> None:
    sim = Sim(make_spec(risk="low"))
    sim.tick()
    sim.tick(1)  # 10% confirmed, hold starts
    started = sim.now
    d = sim.tick(60)
    assert sim.st.step == 1 and sim.st.target_weight == 10
    assert d.requeue_after == (timedelta(minutes=30) - timedelta(seconds=60)).total_seconds()
    assert "holding at 10% until" in (sim.st.message or "")
    sim.now = started + timedelta(minutes=30)
    d = sim.tick()
    assert SetWeight(25) in d.actions
    assert sim.st.step == 2


def test_full_walk_succeeds_at_100() -> None:
    sim = Sim(make_spec(risk="medium", hold="1s"))
    sim.run(lambda s: s.phase() == "Succeeded")
    st = sim.st
    assert (st.weight, st.target_weight, st.step, st.total_steps) == (100, 100, 11, 11)
    assert sim.weights == [5, 10, 25, 50, 75, 100]
    ready = st.condition("Ready")
    assert ready is not None and ready.status == "True"
    assert sim.last is not None and sim.last.requeue_after is None


def test_no_weight_raise_without_ready_new_pods() -> None:
    sim = Sim(make_spec(risk="low"), new_ready=0)
    d = sim.tick()
    assert not any(isinstance(a, SetWeight) for a in d.actions)
    assert "waiting for ready pods of Deployment checkout-v2" in (sim.st.message or "")
    progressing = sim.st.condition("Progressing")
    assert progressing is not None and progressing.reason == "WaitingForCapacity"
    sim.new_ready = 1
    assert SetWeight(10) in sim.tick(5).actions


def test_router_that_manages_capacity_skips_the_readiness_check() -> None:
    sim = Sim(make_spec(risk="low"), new_ready=0, manages_capacity=True)
    assert SetWeight(10) in sim.tick().actions


def test_unreadable_router_moves_nothing() -> None:
    sim = Sim(make_spec(risk="low"))
    sim.tick()
    sim.router = None
    d = sim.tick(1)
    assert not any(isinstance(a, SetWeight) for a in d.actions)
    assert sim.st.step == 0
    assert "cannot read the router" in (sim.st.message or "")


def test_approval_step_waits_for_the_named_step() -> None:
    steps = [{"setWeight": 10}, {"approval": {}}, {"setWeight": 50}]
    sim = Sim(make_spec(risk=None, steps=steps))
    sim.tick()
    sim.tick(1)
    assert sim.phase() == "AwaitingApproval" and sim.st.step == 1
    assert "segue.dev/approve=1" in (sim.st.message or "")
    assert sim.last is not None and sim.last.requeue_after is None
    sim.annotations["segue.dev/approve"] = "1"
    d = sim.tick(1)
    assert ClearAnnotation("segue.dev/approve") in d.actions
    assert SetWeight(50) in d.actions
    assert sim.phase() == "Progressing" and sim.st.step == 2
    assert "Approved" in sim.history_events()


def test_untimed_pause_awaits_approval_too() -> None:
    sim = Sim(make_spec(risk=None, steps=[{"setWeight": 10}, {"pause": {}}]))
    sim.tick()
    sim.tick(1)
    assert sim.phase() == "AwaitingApproval"
    sim.annotations["segue.dev/approve"] = "1"
    sim.tick(1)
    assert sim.st.target_weight == 100  # the implicit final step


def test_consecutive_pauses_each_hold() -> None:
    steps = [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"pause": {"duration": "1m"}}]
    sim = Sim(make_spec(risk=None, steps=steps))
    sim.tick()
    sim.tick(1)
    sim.tick(60)
    assert sim.st.step == 2
    sim.tick(30)
    assert sim.st.step == 2 and sim.st.target_weight == 10
    sim.tick(30)
    assert sim.st.target_weight == 100


def test_promote_skips_to_100_and_succeeds() -> None:
    sim = Sim(make_spec(risk="critical"))
    sim.tick()
    sim.tick(1)
    sim.annotations["segue.dev/promote"] = ""
    d = sim.tick(1)
    assert SetWeight(100) in d.actions
    assert sim.st.promoting is True
    sim.tick(1)
    assert sim.phase() == "Succeeded"
    assert sim.st.promoting is None
    assert "Promoted" in sim.history_events()


def test_promote_is_gated_by_analysis() -> None:
    sim = Sim(make_spec(risk="low", analysis=analysis()))
    sim.tick()
    sim.passing_round()
    sim.tick(1)  # 10% confirmed
    sim.annotations["segue.dev/promote"] = ""
    d = sim.tick(1)  # the latest round predates the confirmed weight
    assert not any(isinstance(a, SetWeight) for a in d.actions)
    assert "waiting for an analysis round" in (sim.st.message or "")
    sim.passing_round()
    assert SetWeight(100) in sim.tick(1).actions


def test_waiting_for_dependencies() -> None:
    sim = Sim(make_spec(risk="low", dependsOn=[{"name": "catalog"}]), deps=("catalog",))
    d = sim.tick()
    assert sim.phase() == "Waiting"
    assert "catalog" in (sim.st.message or "")
    assert not any(isinstance(a, SetWeight) for a in d.actions)
    sim.tick(30)
    assert sim.phase() == "Waiting"
    sim.deps = ()
    d = sim.tick(30)
    assert sim.phase() == "Progressing"
    assert SetWeight(10) in d.actions


def test_missing_objects_stall_without_traffic_actions() -> None:
    sim = Sim(make_spec(risk="low"))
    sim.tick()
    before = sim.st.model_copy(deep=True)
    sim.missing = ("Deployment shop/checkout-v2",)
    sim.router = 0  # even with the router away from the target, nothing is written
    d = sim.tick(5)
    assert not any(isinstance(a, SetWeight) for a in d.actions)
    warnings = [a for a in d.actions if isinstance(a, EmitEvent) and a.type == "Warning"]
    assert [w.reason for w in warnings] == ["MissingReference"]
    stalled = sim.st.condition("Stalled")
    assert stalled is not None and stalled.status == "True"
    assert "Deployment shop/checkout-v2" in stalled.message
    assert (sim.st.phase, sim.st.step, sim.st.target_weight) == (
        before.phase,
        before.step,
        before.target_weight,
    )
    d = sim.tick(5)
    assert not any(isinstance(a, EmitEvent) for a in d.actions)  # once, on the transition
    sim.missing = ()
    d = sim.tick(5)
    assert SetWeight(10) in d.actions
    stalled = sim.st.condition("Stalled")
    assert stalled is not None and stalled.status == "False"


def test_missing_on_the_first_call_stays_pending() -> None:
    d = decide(make_spec(), None, observe(missing=("HTTPRoute shop/checkout",)))
    assert d.status.phase == "Pending"
    assert not any(isinstance(a, SetWeight) for a in d.actions)


def test_new_revision_restarts_from_step_0_via_weight_0() -> None:
    sim = Sim(make_spec(risk="low", hold="1s"))
    sim.run(lambda s: s.st.step == 4)
    assert sim.router == 50
    sim.revision = "r2"
    d = sim.tick(1)
    assert SetWeight(0) in d.actions
    assert (sim.st.step, sim.st.target_weight, sim.st.new_revision) == (0, 0, "r2")
    assert "Restarted" in sim.history_events()
    d = sim.tick(1)
    assert SetWeight(10) in d.actions


def test_new_revision_after_success_restarts() -> None:
    sim = Sim(make_spec(risk="low", hold="1s"))
    sim.run(lambda s: s.phase() == "Succeeded")
    sim.revision = "r2"
    d = sim.tick(1)
    assert sim.phase() == "Progressing"
    assert SetWeight(0) in d.actions


def test_restart_never_moves_traffic_onto_a_cold_legacy() -> None:
    sim = Sim(make_spec(risk="low", hold="1s"))
    sim.run(lambda s: s.phase() == "Succeeded")
    sim.legacy_ready = 0
    sim.revision = "r2"
    d = sim.tick(1)
    assert not any(isinstance(a, SetWeight) for a in d.actions)
    assert "checkout-v1" in (sim.st.message or "")


def test_new_revision_while_waiting_just_records_it() -> None:
    sim = Sim(make_spec(risk="low"), deps=("catalog",))
    sim.tick()
    sim.revision = "r2"
    sim.tick(1)
    assert sim.phase() == "Waiting"
    assert sim.st.new_revision == "r2"
    assert "Restarted" not in sim.history_events()


def test_shortened_plan_keeps_the_step_in_range() -> None:
    sim = Sim(make_spec(risk="critical"))
    sim.tick()
    sim.status = sim.st.model_copy(update={"step": 12})
    sim.spec = make_spec(risk="low")
    sim.tick(1)
    assert sim.st.step <= sim.st.total_steps


def test_history_is_bounded() -> None:
    sim = Sim(make_spec(risk="low"))
    sim.tick()
    for i in range(60):
        sim.annotations["segue.dev/approve"] = f"garbage-{i}"
        sim.tick(1)
    assert len(sim.st.history) == 50
    assert sim.st.history[-1].reason is not None and "garbage-59" in sim.st.history[-1].reason


def test_observed_generation_follows_every_call() -> None:
    sim = Sim(make_spec(risk="low"))
    sim.tick()
    sim.generation = 7
    sim.tick(1)
    assert sim.st.observed_generation == 7
    assert all(c.observed_generation == 7 for c in sim.st.conditions)


def test_started_at_is_the_clock_passed_in() -> None:
    sim = Sim(make_spec(risk="low"), now=T0 + timedelta(days=3))
    sim.tick()
    sim.tick(2)
    assert sim.st.step_started_at == T0 + timedelta(days=3, seconds=2)


def test_critical_walk_with_analysis_and_approvals() -> None:
    sim = Sim(make_spec(risk="critical", hold="1m", analysis=analysis()))

    def approve_and_check(s: Sim) -> bool:
        if s.phase() == "AwaitingApproval":
            s.annotations["segue.dev/approve"] = str(s.st.step)
        return s.phase() == "Succeeded"

    sim.run(approve_and_check, max_ticks=500)
    assert sim.weights == [1, 5, 10, 25, 50, 75, 100]
    assert sim.history_events().count("Approved") == 3
    assert sim.st.condition("Healthy") is not None


def test_an_approval_before_any_traffic_needs_no_analysis_round() -> None:
    spec = make_spec(steps=[{"approval": {}}, {"setWeight": 50}], analysis=analysis())
    sim = Sim(spec)
    sim.tick()
    assert sim.phase() == "AwaitingApproval" and sim.router == 0
    sim.annotations["segue.dev/approve"] = "0"
    sim.tick(1)  # no round has run: at weight 0 there is nothing to analyse
    assert sim.st.step == 1 and sim.st.target_weight == 50
