"""Invariants of the engine under arbitrary interleavings of time, gate rounds, router
lag, readiness and annotations (hypothesis)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segue.api import RolloutSpec, RolloutStatus, plan
from segue.engine import (
    ABORT,
    APPROVE,
    PAUSE,
    PROMOTE,
    RETRY,
    Decision,
    EmitEvent,
    Observations,
    SetWeight,
    decide,
)
from tests.unit.conftest import Sim, gate_round, make_spec, verdict

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies -------------------------------------------------------------------------

_gate = st.fixed_dictionaries(
    {
        "onFailure": st.sampled_from(["rollback", "rollback-graceful", "pause"]),
        "failureLimit": st.integers(1, 3),
    }
)


@st.composite
def specs(draw: st.DrawFn) -> RolloutSpec:
    raw: dict[str, Any] = {}
    if draw(st.booleans()):
        raw["risk"] = draw(st.sampled_from(["low", "medium", "critical"]))
        raw["hold"] = draw(st.sampled_from(["1s", "30s", "5m"]))
    else:
        kinds: st.SearchStrategy[dict[str, Any]] = st.one_of(
            st.integers(1, 100).map(lambda w: {"setWeight": w}),
            st.sampled_from(["1s", "45s", "10m"]).map(lambda d: {"pause": {"duration": d}}),
            st.just({"pause": {}}),
            st.just({"approval": {}}),
        )
        raw["risk"] = None
        raw["steps"] = draw(st.lists(kinds, min_size=1, max_size=8))
    gates = draw(st.lists(_gate, min_size=0, max_size=2))
    if gates:
        raw["analysis"] = {
            "interval": "10s",
            "unreachableLimit": "30s",
            "noData": draw(st.sampled_from(["pause", "fail"])),
            "gates": [
                {"name": f"g{i}", "query": "q", "max": 1.0, **g} for i, g in enumerate(gates)
            ],
        }
    raw["rollback"] = {
        "mode": draw(st.sampled_from(["immediate", "graceful"])),
        "duration": draw(st.sampled_from(["10s", "2m"])),
    }
    return make_spec(**raw)


def _annotation(with_retry: bool) -> st.SearchStrategy[tuple[str, str]]:
    keys = [APPROVE, APPROVE, APPROVE, PROMOTE, ABORT, PAUSE] + ([RETRY] if with_retry else [])
    values = st.one_of(st.integers(-1, 20).map(str), st.sampled_from(["", "x", "because"]))
    return st.tuples(st.sampled_from(keys), values)


def ops(*, with_retry: bool = True, with_revision: bool = True) -> st.SearchStrategy[Any]:
    choices: list[st.SearchStrategy[Any]] = [
        st.tuples(st.just("tick"), st.sampled_from([0.0, 1.0, 5.0, 11.0, 61.0, 400.0, 7300.0])),
        st.tuples(
            st.just("round"),
            st.lists(
                st.sampled_from(["Pass", "Pass", "Fail", "Inconclusive", "Error"]), max_size=3
            ),
            st.booleans(),
        ),
        st.tuples(st.just("annotate"), _annotation(with_retry)),
        st.tuples(st.just("unpause")),
        st.tuples(st.just("follow"), st.booleans()),
        st.tuples(st.just("ready"), st.integers(0, 2), st.integers(0, 2)),
    ]
    if with_revision:
        choices.append(st.tuples(st.just("revision")))
    return st.one_of(*choices)


# --- driver -----------------------------------------------------------------------------


class Driver:
    def __init__(self, spec: RolloutSpec) -> None:
        self.sim = Sim(spec, legacy_ready=2, new_ready=2)
        self.plan = plan(spec)
        self.revisions = 1

    def apply(self, op: tuple[Any, ...]) -> None:
        sim = self.sim
        kind = op[0]
        if kind == "tick":
            self.decide(op[1])
        elif kind == "round":
            self._round(op[1], op[2])
            self.decide(0.0)
        elif kind == "annotate":
            key, value = op[1]
            sim.annotations[key] = value
            self.decide(0.0)
        elif kind == "unpause":
            sim.annotations.pop(PAUSE, None)
        elif kind == "follow":
            sim.follow = op[1]
        elif kind == "ready":
            sim.legacy_ready, sim.new_ready = op[1], op[2]
        elif kind == "revision":
            self.revisions += 1
            sim.revision = f"r{self.revisions}"

    def _round(self, results: list[str], error: bool) -> None:
        sim = self.sim
        analysis = sim.spec.analysis
        if analysis is None:
            return
        verdicts = []
        for i, gate in enumerate(analysis.gates):
            result = "Error" if error else (results[i] if i < len(results) else "Pass")
            verdicts.append(
                verdict(
                    gate.name,
                    result,
                    severity=gate.on_failure or "rollback",
                    limit=gate.failure_limit or 1,
                    value=None if result in ("Inconclusive", "Error") else 0.5,
                )
            )
        sim.gates = gate_round(sim.now, *verdicts, error="unreachable" if error else None)

    def decide(self, seconds: float) -> Decision:
        sim = self.sim
        before = sim.status.model_copy(deep=True) if sim.status is not None else None
        sim.now = sim.now + timedelta(seconds=seconds)
        obs = sim.obs()
        d = decide(sim.spec, sim.status, obs)
        check_invariants(self, before, obs, d)
        # Replaying the same observations acts no more (the controller may crash between
        # writing status and applying actions, or be called twice).
        again = decide(sim.spec, d.status, obs)
        assert not [a for a in again.actions if isinstance(a, EmitEvent)], again.actions
        assert set(again.actions) <= set(d.actions), (again.actions, d.actions)
        assert again.status == d.status
        # Apply as the controller would.
        sim.now = obs.now
        sim.last = d
        sim.status = d.status
        for action in d.actions:
            if isinstance(action, SetWeight):
                sim.weights.append(action.weight)
                if sim.follow:
                    sim.router = action.weight
            elif not isinstance(action, EmitEvent):
                sim.annotations.pop(action.key, None)
        return d


def _fails(obs: Observations, spec: RolloutSpec) -> bool:
    if spec.analysis is None or obs.gates is None:
        return False
    names = {g.name for g in spec.analysis.gates}
    for v in obs.gates.results:
        if v.name not in names:
            continue
        if v.verdict == "Fail":
            return True
        if v.verdict == "Inconclusive" and spec.analysis.no_data == "fail":
            return True
    return False


def check_invariants(
    driver: Driver, before: RolloutStatus | None, obs: Observations, d: Decision
) -> None:
    after = d.status
    # Weights stay within 0..100, and so does the step index within the plan.
    for a in d.actions:
        if isinstance(a, SetWeight):
            assert 0 <= a.weight <= 100
    assert 0 <= after.weight <= 100 and 0 <= after.target_weight <= 100
    assert 0 <= after.step <= after.total_steps == len(driver.plan)
    assert len(after.history) <= 50
    if before is None or before.phase is None:
        return
    # A round with a failing gate never advances the step or raises the weight.
    if _fails(obs, driver.sim.spec):
        assert after.step <= before.step, (before.step, after.step, after.message)
        assert after.target_weight <= before.target_weight
        for a in d.actions:
            if isinstance(a, SetWeight):
                assert a.weight <= before.target_weight
    # An approval only applies to the step it names.
    if after.approved_step is not None:
        assert after.approved_step == after.step
    moved_on = after.step > before.step and before.step < len(driver.plan)
    promoted = bool(before.promoting) or PROMOTE in obs.annotations
    if moved_on and driver.plan[before.step].needs_approval and not promoted:
        named = obs.annotations.get(APPROVE, "").strip()
        assert before.approved_step == before.step or named == str(before.step)
    # A phase transition is announced by an event and kept in history.
    if after.phase != before.phase:
        reasons = [a.reason for a in d.actions if isinstance(a, EmitEvent)]
        assert after.phase in reasons
        assert after.phase in [h.event for h in after.history if h.time == obs.now]
    # A rollback never raises the new version's weight.
    if before.phase == "RollingBack" and after.phase == "RollingBack":
        assert after.target_weight <= before.target_weight


# --- properties -------------------------------------------------------------------------


@SETTINGS
@given(spec=specs(), script=st.lists(ops(), max_size=40))
def test_invariants_hold_under_any_interleaving(spec: RolloutSpec, script: list[Any]) -> None:
    driver = Driver(spec)
    driver.decide(0.0)
    for op in script:
        driver.apply(op)


@SETTINGS
@given(
    spec=specs(),
    prefix=st.lists(ops(), max_size=15),
    during=st.lists(ops(with_retry=False, with_revision=False), max_size=25),
)
def test_a_rollback_always_reaches_weight_0(
    spec: RolloutSpec, prefix: list[Any], during: list[Any]
) -> None:
    driver = Driver(spec)
    driver.decide(0.0)
    for op in prefix:
        driver.apply(op)
    sim = driver.sim
    sim.annotations.pop(RETRY, None)
    driver.decide(0.0)  # observe what the prefix left pending (a new revision, say)
    if sim.st.phase not in ("RollingBack", "RolledBack"):
        sim.annotations[ABORT] = "property test"
        driver.decide(0.0)
    if sim.st.phase not in ("RollingBack", "RolledBack"):
        return  # nothing to roll back from (e.g. Succeeded, or the abort was for it)
    for op in during:
        driver.apply(op)
    # The world settles: the router follows, legacy pods are ready, time passes.
    sim.follow = True
    sim.legacy_ready = 2
    for _ in range(400):
        if sim.st.phase == "RolledBack":
            break
        d = driver.decide(0.0 if sim.last is None else (sim.last.requeue_after or 1.0))
        assert d is not None
    assert sim.st.phase == "RolledBack", sim.st.message
    assert sim.router == 0 and sim.st.weight == 0
