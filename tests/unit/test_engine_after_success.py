"""After the plan reaches 100%: the bake (spec.bakeTime), an abort after success, and a
Rollout held by a dependency that rolled back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from segue.api import RolloutStatus
from segue.api.spec import MSG_BAKE_BOUNDS
from segue.engine import decide
from tests.unit.conftest import Sim, analysis, gate_round, make_spec, verdict, warnings_of


def _baking(**overrides: object) -> Sim:
    spec = make_spec(
        risk=None,
        steps=[{"setWeight": 50}, {"setWeight": 100}],
        bakeTime="10m",
        analysis=analysis(),
        **overrides,
    )
    sim = Sim(spec)
    sim.run(lambda s: s.st.bake_until is not None)
    return sim


def _conditions(sim: Sim) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in sim.st.conditions}


# -- bakeTime ----------------------------------------------------------------------------


def test_bake_time_bounds() -> None:
    assert make_spec(bakeTime="0s").bake_time == "0s"
    assert make_spec(bakeTime="720h").bake_time == "720h"
    with pytest.raises(ValidationError, match=r"spec\.bakeTime: must be between 0s and 720h"):
        make_spec(bakeTime="721h")
    assert MSG_BAKE_BOUNDS.startswith("spec.bakeTime")


def test_bake_holds_at_100_then_succeeds() -> None:
    sim = _baking()
    start = sim.now
    assert sim.st.bake_until == start + timedelta(minutes=10)
    assert sim.phase() == "Progressing"
    assert sim.st.message == "baking at 100% until 2026-03-01T12:10:00Z".replace(
        "12:10:00", (start + timedelta(minutes=10)).strftime("%H:%M:%S")
    )
    assert _conditions(sim)["Progressing"] == ("True", "Baking")
    assert _conditions(sim)["Ready"][0] == "False"
    assert sim.last is not None and sim.last.requeue_after is not None
    assert sim.last.requeue_after <= 600
    assert "Baking" in [e.reason for e in sim.events]
    # Half-way: still baking, the end unchanged.
    sim.passing_round()
    sim.tick(300)
    assert sim.phase() == "Progressing"
    assert sim.st.bake_until == start + timedelta(minutes=10)
    sim.passing_round()
    sim.tick(301)
    assert sim.phase() == "Succeeded"
    assert sim.st.weight == 100


def test_bake_survives_a_restart_without_restarting() -> None:
    sim = _baking()
    end = sim.st.bake_until
    # A restarted operator reads the status back from the API server.
    sim.status = RolloutStatus.model_validate(sim.st.to_wire())
    sim.passing_round()
    sim.tick(120)
    assert sim.st.bake_until == end
    assert sim.st.step == len(sim.spec.steps or [])
    assert [e.reason for e in sim.events].count("WeightSet") == 2  # no step repeated


def test_gate_failing_during_the_bake_rolls_back() -> None:
    sim = _baking()
    sim.gates = gate_round(sim.now + timedelta(seconds=30), verdict(result="Fail", value=0.2))
    d = sim.tick(30)
    assert sim.phase() == "RollingBack"
    assert "RollingBack" in warnings_of(d)
    assert sim.st.rollback is not None and sim.st.rollback.from_weight == 100
    assert sim.st.bake_until is None
    sim.tick(1)
    assert sim.phase() == "RolledBack"
    assert sim.router == 0


def test_graceful_gate_during_the_bake_rolls_back_gracefully() -> None:
    sim = _baking()
    failing = verdict(result="Fail", on_failure="rollback-graceful", value=0.2)
    sim.gates = gate_round(sim.now + timedelta(seconds=30), failing)
    sim.tick(30)
    assert sim.phase() == "RollingBack"
    assert sim.rollback_mode() == "graceful"


def test_without_bake_time_succeeds_at_100() -> None:
    sim = Sim(make_spec(risk=None, steps=[{"setWeight": 100}]))
    sim.run(lambda s: s.phase() == "Succeeded")
    assert sim.st.bake_until is None


def test_retry_after_a_bake_rollback_bakes_again() -> None:
    sim = _baking()
    sim.gates = gate_round(sim.now + timedelta(seconds=30), verdict(result="Fail", value=0.2))
    sim.tick(30)
    sim.tick(1)
    assert sim.phase() == "RolledBack"
    sim.annotations["segue.dev/retry"] = "fixed"
    sim.run(lambda s: s.st.bake_until is not None)
    assert sim.st.bake_until is not None and sim.st.bake_until > sim.now


# -- abort after success ---------------------------------------------------------------


def _succeeded(**overrides: object) -> Sim:
    spec = make_spec(risk=None, steps=[{"setWeight": 50}, {"setWeight": 100}], **overrides)
    sim = Sim(spec)
    sim.run(lambda s: s.phase() == "Succeeded")
    return sim


def test_abort_after_success_rolls_back_immediately() -> None:
    sim = _succeeded()
    sim.annotations["segue.dev/abort"] = "errors after release"
    sim.annotations["segue.dev/aborted-by"] = "alice"
    d = sim.tick(1)
    assert sim.phase() == "RollingBack"
    assert sim.weights[-1] == 0
    sim.tick(1)
    assert sim.phase() == "RolledBack"
    assert sim.router == 0
    aborted = [e for e in sim.events if e.reason == "Aborted"]
    assert aborted and "aborted by alice: errors after release" in aborted[0].message
    assert sim.st.rollback is not None and sim.st.rollback.from_weight == 100
    assert "segue.dev/abort" not in sim.annotations
    assert warnings_of(d).count("RollingBack") == 1


def test_abort_after_success_waits_for_ready_legacy_pods() -> None:
    sim = _succeeded()
    sim.legacy_ready = 0
    sim.annotations["segue.dev/abort"] = ""
    d = sim.tick(1)
    assert sim.phase() == "RollingBack"
    assert sim.router == 100
    assert 0 not in [a.weight for a in d.actions if hasattr(a, "weight")]
    assert _conditions(sim)["Progressing"] == ("True", "WaitingForCapacity")
    sim.legacy_ready = 3
    sim.tick(1)
    sim.tick(1)
    assert sim.phase() == "RolledBack"


def test_abort_after_success_graceful_ramps_down() -> None:
    sim = _succeeded(rollback={"mode": "graceful", "duration": "100s"})
    sim.annotations["segue.dev/abort"] = ""
    sim.tick(1)
    assert sim.phase() == "RollingBack"
    sim.tick(50)
    assert sim.router is not None and 0 < sim.router < 100
    sim.run(lambda s: s.phase() == "RolledBack")
    assert sim.router == 0


def test_abort_after_success_with_the_replicas_router_leaves_scaling_to_it() -> None:
    sim = _succeeded(traffic={"replicas": {}})
    sim.manages_capacity = True
    sim.legacy_ready = 0  # scaled down at 100%
    sim.legacy_desired = 0
    sim.follow = False
    sim.annotations["segue.dev/abort"] = ""
    d = sim.tick(1)
    assert sim.phase() == "RollingBack"
    assert [a.weight for a in d.actions if hasattr(a, "weight")] == [0]
    assert sim.st.legacy_replicas == 3  # the size before the plan, kept from the start


def test_retry_after_an_abort_after_success_starts_over() -> None:
    sim = _succeeded()
    sim.annotations["segue.dev/abort"] = ""
    sim.tick(1)
    sim.tick(1)
    assert sim.phase() == "RolledBack"
    sim.annotations["segue.dev/retry"] = ""
    sim.tick(1)
    assert sim.phase() in ("Progressing", "Succeeded")
    sim.run(lambda s: s.phase() == "Succeeded")
    assert sim.router == 100


# -- a dependency that rolled back -----------------------------------------------------


def test_rolled_back_dependency_stalls_visibly_once() -> None:
    sim = Sim(make_spec(dependsOn=[{"name": "catalog"}]))
    sim.deps_rolled_back = ("Rollout catalog is RolledBack",)
    d = sim.tick()
    assert sim.phase() == "Waiting"
    assert _conditions(sim)["Stalled"] == ("True", "DependencyRolledBack")
    assert _conditions(sim)["Progressing"] == ("False", "DependencyRolledBack")
    assert sim.st.message is not None and "Rollout catalog is RolledBack" in sim.st.message
    assert warnings_of(d) == ["DependencyRolledBack"]
    assert sim.router == 0
    d = sim.tick(5)
    assert warnings_of(d) == []
    # Retried: back to an ordinary wait, then started once it succeeds.
    sim.deps_rolled_back = ()
    sim.deps = ("catalog (Progressing)",)
    sim.tick(1)
    assert _conditions(sim)["Stalled"][0] == "False"
    assert _conditions(sim)["Progressing"] == ("True", "WaitingForDependencies")
    sim.deps = ()
    sim.tick(1)
    assert sim.phase() == "Progressing"


def test_rolled_back_dependency_wins_over_pending_ones() -> None:
    sim = Sim(make_spec(dependsOn=[{"name": "a"}, {"name": "b"}]))
    sim.deps = ("a (Progressing)",)
    sim.deps_rolled_back = ("Rollout b is Failed",)
    sim.tick()
    assert _conditions(sim)["Stalled"] == ("True", "DependencyRolledBack")


def test_dependencies_are_not_read_once_started() -> None:
    spec = make_spec(dependsOn=[{"name": "catalog"}])
    sim = Sim(spec)
    sim.tick()
    assert sim.phase() == "Progressing"
    sim.deps_rolled_back = ("Rollout catalog is RolledBack",)
    # The controller passes none once started; the engine ignores them anyway.
    d = decide(spec, sim.st, sim.obs())
    assert d.status.phase == "Progressing"


@pytest.mark.parametrize("scales", [False, True])
def test_legacy_deleted_after_success_is_not_stalled(scales: bool) -> None:
    sim = _succeeded(**({"traffic": {"replicas": {}}} if scales else {}))
    sim.manages_capacity = scales
    sim.legacy_missing = True
    sim.router_missing = scales  # the replicas router cannot read without legacy
    sim.missing = ("Deployment shop/checkout-v1 (legacy)",)
    d = sim.tick(1)
    assert _conditions(sim)["Stalled"] == ("False", "Succeeded")
    assert _conditions(sim)["Ready"][0] == "True"
    assert warnings_of(d) == []
    # The new Deployment gone too is worth saying.
    sim.new_missing = True
    sim.tick(1)
    assert _conditions(sim)["Stalled"] == ("True", "MissingReference")
