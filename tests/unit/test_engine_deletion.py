"""Deleting a Rollout is an engine decision: traffic returns to legacy, then the finalizer
is released, and it is released within a minute whatever happens."""

from __future__ import annotations

from datetime import timedelta

import pytest

from segue.engine import ClearAnnotation, EmitEvent, ReleaseFinalizer, decide
from tests.unit.conftest import Sim, actions_of, make_spec, observe, weights_of

DEADLINE = 50.0  # seconds: RELEASE_AFTER, leaving the controller the rest of the minute


def _at(weight_step: int, **spec: object) -> Sim:
    sim = Sim(make_spec(risk="low", hold="1h", **spec))
    sim.run(lambda s: s.st.step == weight_step + 1)
    return sim


def _events(sim: Sim) -> list[tuple[str, str, str]]:
    assert sim.last is not None
    return [(e.type, e.reason, e.message) for e in actions_of(sim.last, EmitEvent)]


def test_a_rollout_never_started_is_released_at_once() -> None:
    d = decide(make_spec(), None, observe(deleting=True, deleting_since=observe().now))
    assert d.actions == (ReleaseFinalizer(),)


@pytest.mark.parametrize("where", ["Waiting", "Succeeded", "RolledBack"])
def test_nothing_to_undo_releases_quietly(where: str) -> None:
    sim = Sim(make_spec(risk="low", hold="1s"), deps=("other",) if where == "Waiting" else ())
    if where == "Succeeded":
        sim.run(lambda s: s.phase() == "Succeeded")
    elif where == "RolledBack":
        sim.tick()
        sim.annotations["segue.dev/abort"] = ""
        sim.run(lambda s: s.phase() == "RolledBack")
    else:
        sim.tick()
    assert sim.phase() == where
    sim.delete()
    d = sim.tick(1)
    assert d.actions == (ReleaseFinalizer(),)
    assert sim.router == (100 if where == "Succeeded" else 0)  # left where it is


def test_deleting_while_split_returns_traffic_then_releases() -> None:
    sim = _at(4)  # 50%
    sim.follow = False
    sim.delete()
    d = sim.tick(1)
    assert weights_of(d) == [0]
    assert not sim.released
    assert d.requeue_after is not None and d.requeue_after <= DEADLINE
    assert "returning all traffic to legacy" in (sim.st.message or "")
    assert sim.phase() == "Progressing"  # no phase change: a deletion is not a rollback
    sim.router = 0
    d = sim.tick(1)
    assert sim.released
    assert _events(sim) == [("Normal", "Deleted", "deleted; all traffic on legacy")]
    assert isinstance(d.actions[-1], ReleaseFinalizer)
    again = decide(sim.spec, d.status, sim.obs())  # a replay says nothing twice
    assert again.actions == (ReleaseFinalizer(),)


def test_deleting_with_the_router_already_at_0_is_quiet() -> None:
    steps = [{"setWeight": 10}, {"approval": {}}]
    sim = Sim(make_spec(risk=None, steps=steps))
    sim.tick()
    sim.tick(1)
    sim.router = 0  # someone moved it back by hand
    sim.delete()
    d = sim.tick(1)
    assert d.actions == (ReleaseFinalizer(),)


def test_a_graceful_rollback_is_cut_short_by_deletion() -> None:
    sim = _at(4, rollback={"mode": "graceful", "duration": "10m"})
    sim.annotations["segue.dev/abort"] = ""
    sim.tick(1)
    assert sim.phase() == "RollingBack" and sim.router == 50
    sim.delete()
    assert weights_of(sim.tick(1)) == [0]
    sim.tick(1)
    assert sim.released


def test_no_ready_legacy_pods_waits_then_releases_with_a_warning() -> None:
    sim = _at(2)  # 25%
    sim.legacy_ready = 0
    sim.delete()
    d = sim.tick(0)
    assert weights_of(d) == [] and not sim.released
    assert d.requeue_after == DEADLINE
    d = sim.tick(30)
    assert not sim.released and d.requeue_after == DEADLINE - 30
    sim.tick(DEADLINE - 30)
    assert sim.released
    assert _events(sim) == [
        (
            "Warning",
            "Deleted",
            "deleted; traffic could not be returned: no ready pods in Deployment checkout-v1 "
            "(legacy), the new version still has 25%",
        )
    ]


def test_ready_legacy_pods_in_time_return_the_traffic() -> None:
    sim = _at(2)
    sim.legacy_ready = 0
    sim.delete()
    sim.tick(0)
    sim.legacy_ready = 1
    assert weights_of(sim.tick(10)) == [0]
    sim.tick(0)
    assert sim.released and _events(sim)[0][:2] == ("Normal", "Deleted")


def test_a_router_that_never_reports_0_is_given_up_on() -> None:
    sim = _at(2)
    sim.follow = False
    sim.delete()
    sim.tick(0)
    sim.tick(DEADLINE)
    assert sim.released
    (event,) = _events(sim)
    assert event[:2] == ("Warning", "Deleted")
    assert "the router did not confirm weight 0" in event[2] and "still has 25%" in event[2]


@pytest.mark.parametrize("cause", ["manages_capacity", "new_missing"])
def test_returning_traffic_skips_the_capacity_check_when_it_may(cause: str) -> None:
    sim = _at(2)
    sim.legacy_ready = 0
    setattr(sim, cause, True)
    sim.delete()
    assert weights_of(sim.tick(1)) == [0]


def test_a_missing_route_waits_for_the_deadline() -> None:
    sim = _at(2)
    sim.router_missing = True
    sim.delete()
    d = sim.tick(0)
    assert weights_of(d) == [] and not sim.released
    sim.tick(DEADLINE)
    assert sim.released
    assert "HTTPRoute checkout not found" in _events(sim)[-1][2]


def test_annotations_are_still_handled_while_deleting() -> None:
    sim = _at(2)
    sim.annotations["segue.dev/abort"] = "going away"
    sim.delete()
    sim.follow = False
    d = sim.tick(1)
    assert ClearAnnotation("segue.dev/abort") in d.actions
    assert sim.phase() == "RollingBack" and "Aborted" in sim.history_events()
    assert weights_of(d) == [0] and not sim.released
    sim.router = 0
    d = sim.tick(1)
    assert d.actions[-1] == ReleaseFinalizer()


def test_release_always_comes_within_a_minute() -> None:
    sim = _at(2)
    sim.legacy_ready = 0
    sim.delete()
    start = sim.now
    d = sim.tick(0)
    while not sim.released:
        assert d.requeue_after is not None
        d = sim.tick(d.requeue_after)
    assert sim.now - start <= timedelta(seconds=60)


# --- a spec that does not parse ---------------------------------------------------------


def test_invalid_spec_deletion_returns_traffic_when_routable() -> None:
    sim = _at(2)
    sim.delete()
    d = sim.invalid("spec.hold: too long", 1)
    assert weights_of(d) == [0] and not sim.released
    sim.invalid("spec.hold: too long", 1)
    assert sim.released
    assert _events(sim) == [("Normal", "Deleted", "deleted; all traffic on legacy")]


def test_invalid_spec_deletion_without_a_router_releases_at_once() -> None:
    sim = _at(2)
    sim.delete()
    d = sim.invalid("spec.traffic: bad", 1, routable=False)
    assert weights_of(d) == [] and sim.released
    (event,) = _events(sim)
    assert event[:2] == ("Warning", "Deleted")
    assert "no router can be built from the spec" in event[2] and "25%" in event[2]


def test_invalid_spec_deletion_with_nothing_on_the_new_version_is_quiet() -> None:
    sim = Sim(make_spec(risk="low"), deps=("x",))
    sim.tick()
    sim.invalid("spec.traffic: bad", routable=False)
    sim.delete()
    d = sim.invalid("spec.traffic: bad", 1, routable=False)
    assert d.actions == (ReleaseFinalizer(),)
