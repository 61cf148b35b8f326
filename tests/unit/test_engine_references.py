"""Referenced objects: abort and rollback come first even when one is missing; a vanished
new Deployment is rolled back from at once; the legacy's capacity is watched (Degraded)."""

from __future__ import annotations

from segue.engine import ClearAnnotation, EmitEvent, PhaseChanged, SetWeight
from tests.unit.conftest import (
    Sim,
    actions_of,
    analysis,
    gate_round,
    make_spec,
    verdict,
    warnings_of,
    weights_of,
)

GONE = "Deployment checkout-v2 (new) not found: all traffic returned to legacy"
REPLICAS: dict[str, dict[str, str]] = {"replicas": {}}


def _at(weight_step: int, **spec: object) -> Sim:
    """A Rollout whose router is at the weight of plan step ``weight_step`` (low preset:
    10, 25, 50, 75, 100 at steps 0, 2, 4, 6, 8)."""
    sim = Sim(make_spec(risk="low", hold="1h", **spec))
    sim.run(lambda s: s.st.step == weight_step + 1)
    return sim


def _condition(sim: Sim, type_: str) -> tuple[str, str, str]:
    c = sim.st.condition(type_)
    assert c is not None, type_
    return c.status, c.reason, c.message


# --- the new Deployment is gone ---------------------------------------------------------


def test_new_deployment_gone_under_traffic_returns_it_all_at_once() -> None:
    sim = _at(2)  # 25%
    sim.new_missing = True
    sim.legacy_ready = 0  # no capacity check: the new version's pods are gone anyway
    sim.follow = False
    d = sim.tick(1)
    assert weights_of(d) == [0]
    assert sim.phase() == "RollingBack"
    assert sim.st.rollback is not None
    assert (sim.st.rollback.mode, sim.st.rollback.from_weight) == ("immediate", 25)
    assert sim.st.rollback.reason == GONE
    change = actions_of(d, PhaseChanged)[-1]
    assert change.new == "RollingBack" and GONE in change.message
    assert "RollingBack" in warnings_of(d) and "MissingReference" in warnings_of(d)
    assert _condition(sim, "Stalled")[:2] == ("True", "MissingReference")
    assert d.requeue_after is None  # the router's change is a watch event
    d = sim.tick(1)
    assert weights_of(d) == [0]  # asked again until the router reads it
    assert not actions_of(d, EmitEvent) and not actions_of(d, PhaseChanged)
    sim.router = 0
    sim.tick(1)
    assert sim.phase() == "RolledBack"
    assert GONE in (sim.st.message or "")


def test_new_deployment_gone_escalates_a_graceful_rollback() -> None:
    sim = _at(4, rollback={"mode": "graceful", "duration": "10m"})  # 50%
    sim.annotations["segue.dev/abort"] = "slowly"
    sim.tick(1)
    assert sim.rollback_mode() == "graceful" and sim.router == 50
    sim.new_missing = True
    d = sim.tick(1)
    assert sim.rollback_mode() == "immediate"
    assert weights_of(d) == [0]
    assert "RollbackEscalated" in warnings_of(d)


def test_new_deployment_gone_with_an_abort_honours_both() -> None:
    sim = _at(2)
    sim.new_missing = True
    sim.annotations["segue.dev/abort"] = "it vanished"
    d = sim.tick(1)
    assert weights_of(d) == [0]
    assert ClearAnnotation("segue.dev/abort") in d.actions
    assert sim.st.rollback is not None and sim.st.rollback.reason == "aborted: it vanished"
    assert "Aborted" in sim.history_events()


def test_new_deployment_gone_without_traffic_only_stalls() -> None:
    sim = Sim(make_spec(risk="low"), follow=False)
    sim.tick()  # 10% asked, the router still reads 0
    sim.new_missing = True
    d = sim.tick(1)
    assert weights_of(d) == []
    assert sim.phase() == "Progressing" and sim.st.rollback is None
    assert sim.st.message == "missing: Deployment checkout-v2 (new)"
    assert _condition(sim, "Stalled") == (
        "True",
        "MissingReference",
        "missing: Deployment checkout-v2 (new)",
    )
    assert warnings_of(d) == ["MissingReference"]
    assert not actions_of(sim.tick(1), EmitEvent)  # once per change
    sim.new_missing = False
    sim.follow = True
    assert weights_of(sim.tick(1)) == [10]
    assert _condition(sim, "Stalled")[0] == "False"


def test_new_deployment_gone_before_the_start_stays_pending() -> None:
    sim = Sim(make_spec(risk="low"), new_missing=True)
    d = sim.tick()
    assert sim.phase() == "Pending" and weights_of(d) == []
    assert d.requeue_after is None


def test_a_missing_new_deployment_is_no_new_revision() -> None:
    sim = _at(2)
    sim.revision = "hash-without-template"  # what the shell computes without the object
    sim.new_missing = True
    sim.tick(1)
    assert "Restarted" not in sim.history_events()


# --- the routing object is gone ---------------------------------------------------------


def test_abort_is_recorded_while_the_route_is_missing_and_acts_once_it_is_back() -> None:
    sim = _at(2)
    sim.router_missing = True
    sim.missing = ("HTTPRoute shop/checkout not found",)
    d = sim.tick(1)
    assert weights_of(d) == []
    assert warnings_of(d) == ["MissingReference"]
    assert _condition(sim, "Stalled") == (
        "True",
        "MissingReference",
        "missing: HTTPRoute shop/checkout not found",
    )
    sim.annotations["segue.dev/abort"] = "route gone"
    d = sim.tick(1)
    assert weights_of(d) == []  # nothing to write to
    assert ClearAnnotation("segue.dev/abort") in d.actions
    assert sim.phase() == "RollingBack"
    assert sim.st.rollback is not None and sim.st.rollback.from_weight == 25
    assert "takes effect once it is back" in (sim.st.message or "")
    assert d.requeue_after is None
    sim.router_missing = False
    sim.missing = ()
    d = sim.tick(1)
    assert weights_of(d) == [0]
    sim.tick(1)
    assert sim.phase() == "RolledBack"


def test_a_gate_rollback_is_recorded_while_the_route_is_missing() -> None:
    sim = Sim(make_spec(risk="low", hold="1h", analysis=analysis()))
    sim.tick()
    sim.passing_round()
    sim.tick(1)
    sim.router_missing = True
    sim.gates = gate_round(sim.now, verdict("errors", "Fail", value=0.5))
    d = sim.tick(1)
    assert sim.phase() == "RollingBack" and weights_of(d) == []
    sim.router_missing = False
    assert weights_of(sim.tick(1)) == [0]


def test_flags_without_descriptions_name_the_objects_from_the_spec() -> None:
    sim = _at(0)
    sim.router_missing = True
    sim.tick(1)
    assert sim.st.message == "missing: HTTPRoute checkout"


# --- the legacy Deployment is gone ------------------------------------------------------


def test_abort_with_legacy_gone_never_moves_traffic_onto_it() -> None:
    sim = _at(2, traffic=REPLICAS)
    sim.manages_capacity = True  # even a router that scales cannot scale what is gone
    sim.legacy_missing = True
    sim.annotations["segue.dev/abort"] = "x"
    d = sim.tick(1)
    assert weights_of(d) == []
    assert sim.phase() == "RollingBack"
    assert "MissingReference" in warnings_of(d)
    assert _condition(sim, "Degraded")[:2] == ("True", "LegacyCapacityLost")
    sim.legacy_missing = False
    assert weights_of(sim.tick(1)) == [0]


def test_unnamed_missing_objects_stall_like_a_missing_route() -> None:
    sim = _at(2)
    sim.missing = ("Something shop/else",)
    sim.annotations["segue.dev/abort"] = ""
    d = sim.tick(1)
    assert weights_of(d) == [] and sim.phase() == "RollingBack"


# --- the legacy's capacity --------------------------------------------------------------


def test_legacy_replicas_are_recorded_when_the_plan_starts() -> None:
    sim = Sim(make_spec(risk="low"), legacy_desired=4)
    sim.tick()
    assert sim.st.legacy_replicas == 4
    sim.legacy_desired = 1  # later changes do not move the yardstick
    sim.tick(1)
    assert sim.st.legacy_replicas == 4


def test_legacy_below_its_share_is_degraded_once_per_transition() -> None:
    sim = Sim(make_spec(risk="low", hold="1h"), legacy_desired=4, legacy_ready=4)
    sim.run(lambda s: s.st.step == 3)  # 25%: legacy carries 75%, needs ceil(4 * 0.75) = 3
    assert _condition(sim, "Degraded")[:2] == ("False", "CapacityAvailable")
    sim.legacy_ready = 2
    d = sim.tick(1)
    status, reason, message = _condition(sim, "Degraded")
    assert (status, reason) == ("True", "LegacyCapacityLost")
    assert "2 ready pod(s)" in message and "75%" in message and "needs 3" in message
    assert [e.reason for e in actions_of(d, EmitEvent)] == ["LegacyCapacityLost"]
    assert actions_of(d, EmitEvent)[0].type == "Warning"
    assert not actions_of(sim.tick(1), EmitEvent)
    sim.legacy_ready = 3
    d = sim.tick(1)
    assert _condition(sim, "Degraded")[0] == "False"
    assert [(e.type, e.reason) for e in actions_of(d, EmitEvent)] == [
        ("Normal", "LegacyCapacityRestored")
    ]


def test_legacy_needs_at_least_one_pod_while_it_has_any_share() -> None:
    sim = _at(6)  # 75%
    sim.status = sim.st.model_copy(update={"legacy_replicas": 0})
    sim.legacy_ready = 0
    d = sim.tick(1)
    assert _condition(sim, "Degraded")[0] == "True"
    assert "LegacyCapacityLost" in warnings_of(d)


def test_a_router_that_scales_is_judged_only_on_no_ready_legacy_pods() -> None:
    sim = _at(4, traffic=REPLICAS)
    sim.manages_capacity = True
    sim.legacy_ready = 1  # scaled down by Segue on purpose
    sim.tick(1)
    assert _condition(sim, "Degraded")[0] == "False"
    sim.legacy_ready = 0
    sim.tick(1)
    status, _, message = _condition(sim, "Degraded")
    assert status == "True" and "no ready pods" in message and "50%" in message


def test_degraded_is_not_judged_once_finished() -> None:
    sim = Sim(make_spec(risk="low", hold="1s"), legacy_ready=0)
    sim.run(lambda s: s.phase() == "Succeeded")
    assert _condition(sim, "Degraded")[0] == "False"


def test_no_weight_moves_back_onto_a_legacy_without_ready_pods() -> None:
    sim = _at(2)
    sim.legacy_ready = 0
    sim.annotations["segue.dev/abort"] = ""
    d = sim.tick(1)
    assert weights_of(d) == []
    assert _condition(sim, "Degraded")[0] == "True"
    assert d.requeue_after is None  # ready pods are a watch event


# --- when to look again -----------------------------------------------------------------


def test_waits_that_a_watch_event_ends_ask_for_no_timer() -> None:
    waiting_router = Sim(make_spec(risk="low"), follow=False)
    assert waiting_router.tick().requeue_after is None
    cold = Sim(make_spec(risk="low"), new_ready=0)
    assert cold.tick().requeue_after is None
    deps = Sim(make_spec(risk="low"), deps=("catalog",))
    assert deps.tick().requeue_after is None
    unreadable = _at(0)
    unreadable.router = None
    assert unreadable.tick(1).requeue_after is None


def test_time_based_waits_ask_for_their_time() -> None:
    sim = _at(0)  # holding at 10% for 1h from the confirmation
    assert sim.tick(60).requeue_after == 3600 - 60
    analysed = Sim(make_spec(risk="low", hold="1s", analysis=analysis()))
    analysed.tick()
    analysed.tick(1)  # 10% confirmed, the 1 s hold starts
    d = analysed.tick(5)  # the hold is over; no round since the weight was confirmed
    assert SetWeight(25) not in d.actions
    assert "waiting for the first analysis round" in (analysed.st.message or "")
    assert d.requeue_after == 30.0  # the analysis interval: waiting on a round


def test_a_router_that_scales_grows_legacy_back_when_the_new_deployment_is_gone() -> None:
    sim = _at(4, traffic=REPLICAS)  # 50%: legacy scaled down to half by the router
    sim.manages_capacity = True
    sim.new_missing = True
    sim.router = 0  # the replicas router reads 0 once the new Deployment is gone
    d = sim.tick(1)
    # The status said 50%: roll back, and ask for 0 so that legacy is scaled back up.
    assert weights_of(d) == [0]
    assert sim.phase() == "RolledBack"
    assert sim.st.rollback is not None
    assert (sim.st.rollback.reason, sim.st.rollback.from_weight) == (GONE, 50)
    assert not weights_of(sim.tick(1))  # done: nothing more to ask
