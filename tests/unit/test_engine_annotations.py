"""Annotations: each one-shot acts once and is cleared; one that does not apply is
reported and cleared; pause is a level."""

from __future__ import annotations

from segue.api import RolloutStatus
from segue.engine import ClearAnnotation, EmitEvent, SetWeight, decide, invalid_spec
from tests.unit.conftest import T0, Sim, make_spec

APPROVAL_PLAN = [{"setWeight": 10}, {"approval": {}}, {"setWeight": 50}, {"approval": {}}]


def _awaiting() -> Sim:
    sim = Sim(make_spec(risk=None, steps=APPROVAL_PLAN))
    sim.tick()
    sim.tick(1)
    assert sim.phase() == "AwaitingApproval" and sim.st.step == 1
    return sim


def _warnings(sim: Sim) -> list[EmitEvent]:
    assert sim.last is not None
    return [a for a in sim.last.actions if isinstance(a, EmitEvent) and a.type == "Warning"]


def test_approval_for_another_step_is_ignored_and_cleared() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/approve"] = "3"
    d = sim.tick(1)
    assert sim.st.step == 1 and sim.st.approved_step is None
    assert ClearAnnotation("segue.dev/approve") in d.actions
    assert [w.reason for w in _warnings(sim)] == ["AnnotationIgnored"]
    last = sim.st.history[-1]
    assert last.event == "AnnotationIgnored" and last.actor == "segue.dev/approve"
    assert last.reason is not None and "step 3 is not the current step (1)" in last.reason


def test_garbage_approval_is_ignored() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/approve"] = "yes"
    sim.tick(1)
    assert sim.st.step == 1
    assert "index of the step" in (sim.st.history[-1].reason or "")


def test_stale_approval_never_approves_a_later_step() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/approve"] = "1"
    sim.tick(1)
    assert sim.st.step == 2
    assert "segue.dev/approve" not in sim.annotations
    sim.tick(1)  # 50% confirmed: step 3 awaits approval
    assert sim.st.step == 3 and sim.phase() == "AwaitingApproval"
    sim.annotations["segue.dev/approve"] = "1"  # set again by a stale script
    sim.tick(1)
    assert sim.st.step == 3 and sim.phase() == "AwaitingApproval"


def test_a_handled_annotation_not_yet_removed_acts_once() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/approve"] = "1"
    obs = sim.obs()
    first = decide(sim.spec, sim.status, obs)
    # The controller wrote the status but failed to remove the annotation.
    second = decide(sim.spec, first.status, obs)
    assert first.status.approved_step is None and first.status.step == 2
    assert second.actions == (SetWeight(50), ClearAnnotation("segue.dev/approve"))
    assert second.status.history == first.status.history
    assert second.status.handled_annotations == {"segue.dev/approve": "1"}
    # Once its removal is observed, the record is dropped.
    sim.status = second.status
    sim.annotations.clear()
    sim.tick(1)
    assert sim.st.handled_annotations is None


def test_retry_when_not_rolled_back_is_ignored() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/retry"] = ""
    sim.tick(1)
    assert sim.phase() == "AwaitingApproval"
    assert [w.reason for w in _warnings(sim)] == ["AnnotationIgnored"]
    assert "segue.dev/retry" not in sim.annotations


def test_abort_after_success_is_ignored() -> None:
    sim = Sim(make_spec(risk=None, steps=[{"setWeight": 100}]))
    sim.tick()
    sim.tick(1)
    assert sim.phase() == "Succeeded"
    sim.annotations["segue.dev/abort"] = "x"
    sim.tick(1)
    assert sim.phase() == "Succeeded"
    assert "nothing to abort" in (sim.st.history[-1].reason or "")


def test_abort_in_every_active_phase_rolls_back() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/abort"] = "stop"
    sim.tick(1)
    assert sim.phase() == "RollingBack"
    assert "Aborted" in sim.history_events()
    waiting = Sim(make_spec(risk="low"), deps=("other",))
    waiting.tick()
    waiting.annotations["segue.dev/abort"] = ""
    waiting.tick(1)
    assert waiting.phase() == "RolledBack"


def test_promote_twice_is_reported() -> None:
    sim = _awaiting()
    sim.follow = False
    sim.annotations["segue.dev/promote"] = ""
    sim.tick(1)
    sim.annotations["segue.dev/promote"] = "again"
    sim.tick(1)
    assert "already promoting" in (sim.st.history[-1].reason or "")


def test_pause_holds_until_removed() -> None:
    sim = Sim(make_spec(risk="low", hold="1s"))
    sim.tick()
    sim.annotations["segue.dev/pause"] = ""
    d = sim.tick(1)
    assert sim.phase() == "Paused" and sim.st.paused_reason == "Manual"
    assert ClearAnnotation("segue.dev/pause") not in d.actions
    for _ in range(5):
        d = sim.tick(60)
        assert not any(isinstance(a, SetWeight) for a in d.actions)
    assert sim.st.step == 0  # not even the confirmation advances
    del sim.annotations["segue.dev/pause"]
    sim.tick(1)
    assert sim.phase() == "Progressing" and sim.st.step == 1


def test_pause_at_an_approval_step_resumes_to_awaiting_approval() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/pause"] = ""
    sim.tick(1)
    assert sim.phase() == "Paused"
    sim.annotations["segue.dev/approve"] = "1"  # recorded while paused
    sim.tick(1)
    assert sim.phase() == "Paused" and sim.st.approved_step == 1
    del sim.annotations["segue.dev/pause"]
    d = sim.tick(1)
    assert SetWeight(50) in d.actions
    assert [h.event for h in sim.st.history].count("Progressing") == 2


def test_invalid_spec_fails_and_a_fixed_spec_resumes() -> None:
    sim = _awaiting()
    d = invalid_spec(sim.status, now=T0, generation=2, message="steps.0: bad")
    assert d.status.phase == "Failed"
    assert d.actions and all(isinstance(a, EmitEvent) for a in d.actions)
    stalled = d.status.condition("Stalled")
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "InvalidSpec")
    again = invalid_spec(d.status, now=T0, generation=2, message="steps.0: bad")
    assert again.actions == ()
    sim.status = d.status
    sim.generation = 3
    sim.tick(1)
    assert sim.phase() == "AwaitingApproval" and sim.st.step == 1


def test_invalid_spec_on_a_new_rollout() -> None:
    d = invalid_spec(None, now=T0, generation=1, message="spec.risk: bad")
    assert isinstance(d.status, RolloutStatus)
    assert d.status.phase == "Failed"
    assert d.status.message == "invalid spec: spec.risk: bad"


def test_retry_from_failed_restarts() -> None:
    sim = _awaiting()
    sim.status = invalid_spec(sim.status, now=T0, generation=1, message="x").status
    sim.annotations["segue.dev/retry"] = ""
    sim.tick(1)
    assert sim.phase() == "Progressing" and sim.st.step == 0


def test_a_spec_corrected_after_failing_mid_rollback_finishes_the_rollback() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/abort"] = "bad"
    sim.follow = False  # the router has not reached 0 yet
    sim.tick(1)
    assert sim.phase() == "RollingBack"
    sim.status = invalid_spec(sim.status, now=sim.now, generation=2, message="x").status
    assert sim.phase() == "Failed"
    sim.generation = 3
    sim.follow = True
    d = sim.tick(1)
    assert sim.phase() in ("RollingBack", "RolledBack")
    assert all(a.weight == 0 for a in d.actions if isinstance(a, SetWeight))
    sim.run(lambda s: s.phase() == "RolledBack")
    assert sim.router == 0
