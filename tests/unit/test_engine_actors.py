"""Who steered a Rollout: the companion annotations (segue.dev/approved-by, ...) name the
person in history and Events, and go together with their annotation; plan edits made after
traffic moved are recorded with their editor, once."""

from __future__ import annotations

from segue.api.plan import plan_digest
from segue.engine import ClearAnnotation, EmitEvent, PhaseChanged, decide
from tests.unit.conftest import Sim, make_spec

APPROVAL_PLAN = [{"setWeight": 10}, {"approval": {}}, {"setWeight": 50}, {"approval": {}}]


def _awaiting() -> Sim:
    sim = Sim(make_spec(risk=None, steps=APPROVAL_PLAN))
    sim.tick()
    sim.tick(1)
    assert sim.phase() == "AwaitingApproval" and sim.st.step == 1
    return sim


def _events(sim: Sim) -> list[tuple[str, str]]:
    assert sim.last is not None
    return [(a.reason, a.message) for a in sim.last.actions if isinstance(a, EmitEvent)]


def test_an_approval_names_the_approver_and_both_annotations_go() -> None:
    sim = _awaiting()
    sim.annotations |= {"segue.dev/approve": "1", "segue.dev/approved-by": "alice"}
    d = sim.tick(1)
    entry = next(h for h in sim.st.history if h.event == "Approved")
    assert (entry.actor, entry.reason) == ("alice", "step 1 approved by alice")
    assert ("Approved", "step 1 approved by alice") in [
        (a.reason, a.message) for a in d.actions if isinstance(a, EmitEvent)
    ]
    cleared = [a.key for a in d.actions if isinstance(a, ClearAnnotation)]
    assert cleared == ["segue.dev/approve", "segue.dev/approved-by"]
    assert not sim.annotations


def test_without_a_companion_the_actor_is_the_annotation() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/approve"] = "1"
    sim.tick(1)
    entry = next(h for h in sim.st.history if h.event == "Approved")
    assert (entry.actor, entry.reason) == ("segue.dev/approve", "step 1 approved")


def test_an_ignored_annotation_names_who_set_it() -> None:
    sim = _awaiting()
    sim.annotations |= {"segue.dev/approve": "3", "segue.dev/approved-by": "bob"}
    sim.tick(1)
    last = sim.st.history[-1]
    assert last.event == "AnnotationIgnored" and last.actor == "bob"
    assert (last.reason or "").startswith("segue.dev/approve='3' by bob ignored: step 3")


def test_abort_names_the_person_in_history_the_event_and_the_phase_change() -> None:
    sim = _awaiting()
    sim.annotations |= {"segue.dev/abort": "p99 up", "segue.dev/aborted-by": "carol"}
    sim.tick(1)
    entry = next(h for h in sim.st.history if h.event == "Aborted")
    assert (entry.actor, entry.reason) == ("carol", "aborted by carol: p99 up")
    assert ("Aborted", "aborted by carol: p99 up") in _events(sim)
    rolling = next(c for c in sim.changes if c.new == "RollingBack")
    assert rolling.actor == "carol"
    assert not sim.annotations


def test_promote_and_retry_name_the_person() -> None:
    sim = _awaiting()
    sim.annotations |= {"segue.dev/promote": "t1", "segue.dev/promoted-by": "dave"}
    sim.tick(1)
    entry = next(h for h in sim.st.history if h.event == "Promoted")
    assert entry.actor == "dave" and "by dave" in (entry.reason or "")

    sim.annotations |= {"segue.dev/abort": "", "segue.dev/aborted-by": "dave"}
    sim.run(lambda s: s.phase() == "RolledBack")
    sim.annotations |= {"segue.dev/retry": "t2", "segue.dev/retried-by": "erin"}
    sim.tick(1)
    entry = next(h for h in sim.st.history if h.event == "Retried")
    assert (entry.actor, entry.reason) == ("erin", "retry requested by erin: t2")


def test_a_manual_pause_names_the_person_and_its_companion_goes_with_it() -> None:
    sim = _awaiting()
    sim.annotations |= {"segue.dev/pause": "", "segue.dev/paused-by": "frank"}
    sim.tick(1)
    assert sim.phase() == "Paused"
    paused = sim.changes[-1]
    assert paused.actor == "frank"
    assert paused.message == (
        "paused by annotation segue.dev/pause (set by frank); remove it to resume"
    )
    assert sim.st.history[-1].actor == "frank"
    assert "segue.dev/paused-by" in sim.annotations  # a level: stays with the pause
    del sim.annotations["segue.dev/pause"]
    d = sim.tick(1)
    assert sim.phase() == "AwaitingApproval"
    assert ClearAnnotation("segue.dev/paused-by") in d.actions and not sim.annotations


def test_an_abort_with_an_invalid_spec_names_the_person() -> None:
    sim = _awaiting()
    sim.annotations |= {"segue.dev/abort": "broken", "segue.dev/aborted-by": "gina"}
    sim.generation = 2
    d = sim.invalid("spec.hold: too long")
    entry = next(h for h in sim.st.history if h.event == "Aborted")
    assert (entry.actor, entry.reason) == ("gina", "aborted by gina: broken")
    assert ClearAnnotation("segue.dev/aborted-by") in d.actions and not sim.annotations


# --- plan edits ------------------------------------------------------------------------------


def _edit(sim: Sim, **spec: object) -> None:
    sim.spec = make_spec(**spec)
    sim.generation += 1


def test_a_plan_edit_after_traffic_moved_is_recorded_once_with_its_editor() -> None:
    sim = _awaiting()  # 10%
    assert sim.st.plan_digest == plan_digest(sim.spec)
    _edit(sim, risk=None, steps=[{"setWeight": 100}])
    sim.annotations["segue.dev/plan-edited-by"] = "alice"
    d = sim.tick(1)
    entries = [h for h in sim.st.history if h.event == "PlanChanged"]
    assert [(h.actor, h.reason) for h in entries] == [
        ("alice", "plan changed by alice at step 1 (10%); it now has 1 steps")
    ]
    assert [e for e in _events(sim) if e[0] == "PlanChanged"] == [
        ("PlanChanged", "plan changed by alice at step 1 (10%); it now has 1 steps")
    ]
    assert sim.st.plan_digest == plan_digest(sim.spec)
    # Replaying the same observations records nothing more.
    replay = decide(sim.spec, d.status, sim.obs())
    assert [h.event for h in replay.status.history].count("PlanChanged") == 1
    assert not [a for a in replay.actions if isinstance(a, EmitEvent) and a.reason == "PlanChanged"]


def test_an_unnamed_plan_edit_is_recorded_as_unknown() -> None:
    sim = _awaiting()
    _edit(sim, risk=None, steps=APPROVAL_PLAN, hold=None, analysis=None, rollback=None)
    sim.tick(1)
    assert "PlanChanged" not in sim.history_events()  # nothing in the plan changed
    _edit(sim, risk=None, steps=[{"setWeight": 10}, {"setWeight": 100}])
    sim.tick(1)
    entry = next(h for h in sim.st.history if h.event == "PlanChanged")
    assert entry.actor == "unknown"


def test_other_spec_edits_are_not_plan_changes() -> None:
    sim = _awaiting()
    _edit(sim, risk=None, steps=APPROVAL_PLAN, rollback={"mode": "graceful", "duration": "1m"})
    d = sim.tick(1)
    assert sim.st.observed_generation == sim.generation
    assert "PlanChanged" not in sim.history_events()
    assert not [a for a in d.actions if isinstance(a, PhaseChanged)]


def test_a_plan_edit_before_traffic_moved_is_not_recorded() -> None:
    sim = Sim(make_spec(risk=None, steps=APPROVAL_PLAN), deps=("catalog (Pending)",))
    sim.tick()
    assert sim.phase() == "Waiting"
    _edit(sim, risk=None, steps=[{"setWeight": 100}])
    sim.tick(1)
    assert "PlanChanged" not in sim.history_events()
    assert sim.st.plan_digest == plan_digest(sim.spec)


def test_the_digest_ignores_defaults_and_sees_each_plan_field() -> None:
    base = make_spec(risk="low")
    assert plan_digest(base) == plan_digest(make_spec(risk="low"))
    assert plan_digest(base) != plan_digest(make_spec(risk="medium"))
    assert plan_digest(base) != plan_digest(make_spec(risk="low", hold="5m"))
    assert plan_digest(base) == plan_digest(
        make_spec(risk="low", rollback={"mode": "graceful", "duration": "1m"})
    )
