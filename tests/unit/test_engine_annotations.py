"""Annotations: each one-shot acts once and is cleared; one that does not apply is
reported and cleared; pause is a level."""

from __future__ import annotations

import pytest

from segue.api import RolloutStatus
from segue.engine import ClearAnnotation, EmitEvent, PhaseChanged, SetWeight, decide, invalid_spec
from tests.unit.conftest import Sim, make_spec, observe

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


@pytest.mark.parametrize("value", ["\u0661", "1_0", "+1", " 1.0", "\uff11", "0001", ""])
def test_an_approval_that_is_not_ascii_digits_is_ignored(value: str) -> None:
    # int() reads "\u0661" (Arabic-Indic one) and "\uff11" (fullwidth one) as 1, "1_0" as 10.
    sim = _awaiting()
    sim.annotations["segue.dev/approve"] = value
    d = sim.tick(1)
    assert sim.st.step == 1 and sim.st.approved_step is None
    assert sim.phase() == "AwaitingApproval"
    assert ClearAnnotation("segue.dev/approve") in d.actions
    warnings = _warnings(sim)
    assert [w.reason for w in warnings] == ["AnnotationIgnored"]
    assert warnings[0].message == (
        f"segue.dev/approve={value!r} ignored: the value must be the index of the step to "
        "approve: 1 to 3 ASCII digits (0-9)"
    )
    assert sim.st.history[-1].event == "AnnotationIgnored"


def test_an_approval_with_leading_zeros_and_spaces_approves() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/approve"] = " 01 "
    sim.tick(1)
    assert sim.st.approved_step == 1 or sim.st.step == 2


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


def test_abort_after_success_with_legacy_gone_is_refused() -> None:
    sim = Sim(make_spec(risk=None, steps=[{"setWeight": 100}]))
    sim.tick()
    sim.tick(1)
    assert sim.phase() == "Succeeded"
    sim.legacy_missing = True
    sim.annotations["segue.dev/abort"] = "x"
    sim.tick(1)
    assert sim.phase() == "Succeeded"
    ignored = [e.message for e in _warnings(sim) if e.reason == "AnnotationIgnored"]
    assert ignored == [
        "segue.dev/abort='x' ignored: the legacy Deployment checkout-v1 no longer exists; "
        "nothing to roll back to"
    ]
    assert "segue.dev/abort" not in sim.annotations


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
    sim.generation = 2
    d = sim.invalid("spec.steps.0: bad")
    assert d.status.phase == "Failed"
    assert d.actions == (
        PhaseChanged(
            old="AwaitingApproval",
            new="Failed",
            paused_reason=None,
            message="invalid spec: spec.steps.0: bad",
            actor="segue",
            verdict=None,
            at=sim.now,
        ),
    )
    stalled = d.status.condition("Stalled")
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "InvalidSpec")
    assert "spec.steps.0" in stalled.message
    assert sim.invalid("spec.steps.0: bad", 1).actions == ()  # no traffic action, no repeat
    assert sim.router == 10
    sim.generation = 3
    sim.tick(1)
    assert sim.phase() == "AwaitingApproval" and sim.st.step == 1


def test_invalid_spec_on_a_new_rollout() -> None:
    d = invalid_spec(None, observe(), message="spec.risk: bad", routable=False)
    assert isinstance(d.status, RolloutStatus)
    assert d.status.phase == "Failed"
    assert d.status.message == "invalid spec: spec.risk: bad"
    assert d.requeue_after is None


def test_retry_from_failed_restarts() -> None:
    sim = _awaiting()
    sim.invalid("x")
    sim.annotations["segue.dev/retry"] = ""
    sim.tick(1)
    assert sim.phase() == "Progressing" and sim.st.step == 0


def test_a_spec_corrected_after_failing_mid_rollback_finishes_the_rollback() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/abort"] = "bad"
    sim.follow = False  # the router has not reached 0 yet
    sim.tick(1)
    assert sim.phase() == "RollingBack"
    sim.generation = 2
    sim.invalid("x")
    assert sim.phase() == "Failed"
    sim.generation = 3
    sim.follow = True
    d = sim.tick(1)
    assert sim.phase() in ("RollingBack", "RolledBack")
    assert all(a.weight == 0 for a in d.actions if isinstance(a, SetWeight))
    sim.run(lambda s: s.phase() == "RolledBack")
    assert sim.router == 0


# --- abort with a spec that does not parse ----------------------------------------------


def test_abort_with_an_invalid_spec_returns_traffic_at_once() -> None:
    sim = _awaiting()  # 10%
    sim.annotations["segue.dev/abort"] = "broken spec"
    sim.generation = 2
    sim.follow = False
    d = sim.invalid("spec.hold: too long")
    assert sim.phase() == "Failed"
    assert (sim.st.message or "").startswith("invalid spec: spec.hold: too long")
    assert SetWeight(0) in d.actions
    assert ClearAnnotation("segue.dev/abort") in d.actions
    assert [a.reason for a in d.actions if isinstance(a, EmitEvent)] == ["Aborted"]
    rb = sim.st.rollback
    assert rb is not None and (rb.mode, rb.from_weight, rb.reason) == (
        "immediate",
        10,
        "aborted: broken spec",
    )
    again = invalid_spec(d.status, sim.obs(), message="spec.hold: too long", routable=True)
    assert not [a for a in again.actions if isinstance(a, EmitEvent | PhaseChanged)]
    assert sim.invalid("spec.hold: too long", 1).actions == (SetWeight(0),)  # until read back
    sim.router = 0
    assert sim.invalid("spec.hold: too long", 1).actions == ()
    sim.generation = 3  # corrected: the rollback is finished, never walked forward
    sim.tick(1)
    assert sim.phase() == "RolledBack"


def test_abort_with_an_unroutable_spec_is_recorded_for_later() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/abort"] = ""
    sim.generation = 2
    d = sim.invalid("spec.traffic: exactly one router", routable=False)
    assert not [a for a in d.actions if isinstance(a, SetWeight)]
    assert ClearAnnotation("segue.dev/abort") in d.actions
    assert sim.st.rollback is not None and sim.router == 10
    sim.generation = 3
    d = sim.tick(1)
    assert SetWeight(0) in d.actions and sim.phase() in ("RollingBack", "RolledBack")


def test_abort_with_an_invalid_spec_waits_for_ready_legacy_pods() -> None:
    sim = _awaiting()
    sim.legacy_ready = 0
    sim.annotations["segue.dev/abort"] = ""
    d = sim.invalid("spec.x: bad")
    assert not [a for a in d.actions if isinstance(a, SetWeight)]
    assert "no ready pods in the legacy Deployment" in (sim.st.message or "")
    sim.legacy_ready = 1
    assert sim.invalid("spec.x: bad", 1).actions == (SetWeight(0),)


def test_other_annotations_wait_for_a_spec_that_parses() -> None:
    sim = _awaiting()
    sim.annotations["segue.dev/approve"] = "1"
    d = sim.invalid("spec.x: bad")
    assert d.actions[1:] == ()  # only the phase change
    assert "segue.dev/approve" in sim.annotations
    sim.generation = 2
    sim.tick(1)
    assert sim.st.step == 2  # approved once the spec parses
