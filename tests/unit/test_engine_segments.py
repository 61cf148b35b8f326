"""setSegment steps: named customers go to the new version before or beside a percentage;
the segment stays until 100% or a rollback, and every way back removes it in the same
write as the weight."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from segue.api import RolloutSpec
from segue.api.routing import Segment
from segue.api.spec import MSG_SEGMENT_ROUTER
from segue.engine import SetWeight
from tests.unit.conftest import Sim, make_spec, spec_dict

SEGMENT = {"header": "x-customer-id", "values": ["acme", "globex"]}
ACME = Segment.model_validate(SEGMENT)


def segment_spec(**extra: object) -> RolloutSpec:
    steps = [
        {"setSegment": SEGMENT},
        {"pause": {"duration": "1m"}},
        {"setWeight": 25},
        {"pause": {"duration": "1m"}},
        {"setWeight": 100},
    ]
    return make_spec(steps=steps, **extra)


def test_the_segment_goes_first_then_percentages_follow_with_it() -> None:
    sim = Sim(segment_spec())
    d = sim.tick()
    assert SetWeight(0, ACME) in d.actions
    assert sim.st.segment == ACME
    sim.tick()  # the router reads the segment back: the step is confirmed, the hold starts
    assert sim.st.step == 1
    assert "SegmentSet" in sim.history_events()
    assert "x-customer-id in [acme, globex]" in sim.history_events_text()
    d = sim.tick(60)
    assert SetWeight(25, ACME) in d.actions  # the percentage keeps the segment
    sim.run(lambda s: s.phase() == "Succeeded")
    assert sim.segment is None  # at 100% the segment rule goes with the last write
    assert sim.st.segment is None
    assert sim.router == 100


def test_a_segment_is_not_confirmed_until_the_router_reads_it_back() -> None:
    sim = Sim(segment_spec(), follow=False)
    sim.tick()
    d = sim.tick(5)
    assert SetWeight(0, ACME) in d.actions  # asked again
    assert sim.st.step == 0
    assert "waiting for the router to report 0% and x-customer-id in" in (sim.st.message or "")
    sim.segment = ACME
    sim.tick()
    assert sim.st.step == 1


def test_a_segment_needs_ready_new_pods() -> None:
    sim = Sim(segment_spec(), new_ready=0)
    d = sim.tick()
    assert not [a for a in d.actions if isinstance(a, SetWeight) and a.segment]
    assert "waiting for ready pods" in (sim.st.message or "")
    assert sim.st.segment is None


@pytest.mark.parametrize("mode", ["immediate", "graceful"])
def test_a_rollback_clears_the_segment_in_its_first_write(mode: str) -> None:
    sim = Sim(segment_spec(rollback={"mode": mode, "duration": "1m"}))
    sim.run(lambda s: s.st.target_weight == 25 and s.router == 25)
    assert sim.segment == ACME
    sim.annotations["segue.dev/abort"] = "bad"
    d = sim.tick()
    first = [a for a in d.actions if isinstance(a, SetWeight)]
    assert first and first[0].segment is None
    assert sim.segment is None
    sim.run(lambda s: s.phase() == "RolledBack")
    assert (sim.router, sim.segment, sim.st.segment) == (0, None, None)


def test_rolled_back_only_once_the_segment_rule_is_gone() -> None:
    sim = Sim(segment_spec())
    sim.tick()
    sim.tick()
    assert sim.segment == ACME and sim.router == 0
    sim.follow = False
    sim.annotations["segue.dev/abort"] = ""
    d = sim.tick()
    assert SetWeight(0, None) in d.actions
    assert sim.phase() == "RollingBack"  # weight reads 0, but the segment is still routed
    sim.segment = None
    sim.tick()
    assert sim.phase() == "RolledBack"


def test_deletion_waits_for_the_segment_rule_to_go() -> None:
    sim = Sim(segment_spec())
    sim.tick()
    sim.tick()
    sim.follow = False
    sim.delete()
    d = sim.tick()
    assert SetWeight(0, None) in d.actions
    assert not sim.released
    sim.segment = None
    sim.tick()
    assert sim.released


def test_set_segment_needs_a_router_that_routes_by_header() -> None:
    raw = spec_dict(steps=[{"setSegment": SEGMENT}, {"setWeight": 100}])
    raw["traffic"] = {"replicas": {}}
    with pytest.raises(ValidationError, match="setSegment needs a router"):
        RolloutSpec.model_validate(raw)
    assert "gatewayAPI" in MSG_SEGMENT_ROUTER and "replicas" not in MSG_SEGMENT_ROUTER


@pytest.mark.parametrize(
    ("segment", "text"),
    [
        ({"header": "X-Customer", "values": ["a"]}, "pattern"),
        ({"header": "x-customer", "values": []}, "at least 1"),
        ({"header": "x-customer", "values": ["a", "a"]}, "values must be unique"),
        ({"header": "x-customer", "values": ["a b"]}, "pattern"),
        ({"header": "x-customer", "values": [str(i) for i in range(33)]}, "at most 32"),
    ],
)
def test_segments_are_bounded_and_checked(segment: dict[str, object], text: str) -> None:
    raw = spec_dict(steps=[{"setSegment": segment}, {"setWeight": 100}])
    with pytest.raises(ValidationError, match=text):
        RolloutSpec.model_validate(raw)
