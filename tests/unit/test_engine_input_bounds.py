"""Huge annotation values through the engine: the status stays writable and the Events small,
and a one-shot annotation still acts exactly once."""

from __future__ import annotations

import json

import pytest

from segue.api import RolloutStatus
from segue.api.text import MAX_MESSAGE_BYTES, MAX_STATUS_BYTES, annotation_mark, wire_size
from segue.engine import ClearAnnotation, EmitEvent, decide
from tests.unit.conftest import Sim, make_spec

HUGE = 200 * 1024
APPROVAL_PLAN = [{"setWeight": 10}, {"approval": {}}, {"setWeight": 50}]


def _awaiting() -> Sim:
    sim = Sim(make_spec(risk=None, steps=APPROVAL_PLAN))
    sim.tick()
    sim.tick(1)
    assert sim.phase() == "AwaitingApproval" and sim.st.step == 1
    return sim


def _assert_small(sim: Sim) -> None:
    wire = sim.st.to_wire()
    assert wire_size(wire) < MAX_STATUS_BYTES
    assert len(json.dumps(wire, ensure_ascii=False).encode()) < MAX_STATUS_BYTES
    assert sim.events
    for event in sim.events:
        assert len(event.message.encode()) <= MAX_MESSAGE_BYTES, event.reason


@pytest.mark.parametrize("fill", ["7", "x", "ü", "\x00", "\U0001f600"])
def test_huge_approve_is_ignored_and_stays_small(fill: str) -> None:
    sim = _awaiting()
    value = fill * (HUGE // len(fill.encode()))
    sim.annotations["segue.dev/approve"] = value
    d = sim.tick(1)
    assert ClearAnnotation("segue.dev/approve") in d.actions
    assert sim.st.step == 1 and sim.st.approved_step is None
    assert sim.events[-1].reason == "AnnotationIgnored"
    assert sim.st.handled_annotations == {"segue.dev/approve": annotation_mark(value)}
    _assert_small(sim)


@pytest.mark.parametrize("fill", ["x", "ü", "\x00"])
def test_huge_abort_rolls_back_and_stays_small(fill: str) -> None:
    sim = _awaiting()
    value = fill * (HUGE // len(fill.encode()))
    sim.annotations["segue.dev/abort"] = value
    sim.tick(1)
    assert sim.phase() in ("RollingBack", "RolledBack")
    assert sim.st.target_weight == 0
    assert "Aborted" in [e.reason for e in sim.events]
    _assert_small(sim)
    sim.run(lambda s: s.phase() == "RolledBack")
    _assert_small(sim)


def test_a_huge_handled_annotation_acts_once_across_a_status_round_trip() -> None:
    sim = _awaiting()
    value = "x" * HUGE
    sim.annotations["segue.dev/abort"] = value
    obs = sim.obs()
    first = decide(sim.spec, sim.status, obs)
    # The status was written and read back, but the annotation's removal failed.
    stored = RolloutStatus.model_validate(first.status.to_wire())
    second = decide(sim.spec, stored, obs)
    assert [h.event for h in second.status.history].count("Aborted") == 1
    events = [a.reason for a in second.actions if isinstance(a, EmitEvent)]
    assert "Aborted" not in events
    assert ClearAnnotation("segue.dev/abort") in second.actions
