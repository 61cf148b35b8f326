"""Invariants of the engine under arbitrary interleavings of time, gate rounds, router
lag, readiness, missing objects, objects losing the segue.dev/managed label, deletion and
annotations (hypothesis).

``make test`` runs the derandomized ``ci`` profile (tests/unit/conftest.py); for a long
hunt: ``HYPOTHESIS_PROFILE=random pytest tests/unit/test_engine_properties.py``."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any, Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segue.api import RolloutSpec, RolloutStatus, plan
from segue.api.phases import ACTIVE, ANALYSED
from segue.engine import (
    ABORT,
    APPROVE,
    PAUSE,
    PROMOTE,
    RETRY,
    Decision,
    EmitEvent,
    Observations,
    PhaseChanged,
    ReleaseFinalizer,
    SetWeight,
    decide,
)
from tests.unit.conftest import Sim, gate_round, make_spec, verdict

# How many examples comes from the profile (tests/unit/conftest.py).
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The finalizer is released within this long of the deletion, whatever happens.
RELEASE_WITHIN: Final = timedelta(seconds=60)

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


def ops(
    *, with_retry: bool = True, with_revision: bool = True, with_delete: bool = True
) -> st.SearchStrategy[Any]:
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
        st.tuples(st.just("lose"), st.sampled_from(["new", "legacy", "router"]), st.booleans()),
        st.tuples(st.just("unlabel"), st.booleans()),
    ]
    if with_revision:
        choices.append(st.tuples(st.just("revision")))
    if with_delete:
        choices.append(st.tuples(st.just("delete")))
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
        elif kind == "lose":
            setattr(sim, f"{op[1]}_missing", op[2])
            self.decide(0.0)
        elif kind == "unlabel":
            sim.unmanaged = (("HTTPRoute", "ns", "checkout"),) if op[1] else ()
            self.decide(0.0)
        elif kind == "delete":
            if sim.deleting_since is None:
                sim.delete()
            self.decide(0.0)

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
                    on_failure=gate.on_failure or "rollback",
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
        said = [a for a in again.actions if isinstance(a, EmitEvent | PhaseChanged)]
        assert not said, again.actions
        assert set(again.actions) <= set(d.actions), (again.actions, d.actions)
        assert again.status == d.status
        return sim.apply(d)


def _fails(obs: Observations, spec: RolloutSpec, weight: int) -> bool:
    """The latest round has a failing gate, and it is judged: rounds run and count only
    while the new version has traffic (a round seen at weight 0 predates that, say a
    restart, and holds nothing)."""
    if spec.analysis is None or obs.gates is None or weight == 0:
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
    _check_capacity(obs, d)
    if before is None or before.phase is None:
        return
    # A judged round with a failing gate never advances the step or raises the weight.
    if _fails(obs, driver.sim.spec, after.weight):
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
    # A phase transition is announced by one structured action and kept in history.
    changes = [a for a in d.actions if isinstance(a, PhaseChanged)]
    if after.phase != before.phase:
        assert changes and changes[0].old == before.phase and changes[-1].new == after.phase
        assert after.phase in [h.event for h in after.history if h.time == obs.now]
    for a, b in itertools.pairwise(changes):
        assert a.new == b.old
    # A rollback never raises the new version's weight.
    if before.phase == "RollingBack" and after.phase == "RollingBack":
        assert after.target_weight <= before.target_weight
    # Abort always wins: whatever is missing, an abort of an active Rollout is recorded.
    value = obs.annotations.get(ABORT)
    handled = (before.handled_annotations or {}).get(ABORT)
    if value is not None and value != handled and before.phase in ACTIVE:
        assert after.phase in ("RollingBack", "RolledBack"), (after.phase, after.message)
        assert after.rollback is not None
    # The new Deployment gone while traffic is on it: weight 0 at once, if it can be set.
    if (
        obs.new_missing
        and not obs.legacy_missing
        and not obs.router_missing
        and not obs.unmanaged
        and (obs.router_weight or 0) > 0
        and before.phase in ANALYSED
    ):
        assert SetWeight(0) in d.actions, (after.phase, after.message)
    # Deletion: the finalizer is released within a minute, and a pass is asked for in time.
    released = any(isinstance(a, ReleaseFinalizer) for a in d.actions)
    if obs.deleting and obs.deleting_since is not None and not released:
        left = (obs.deleting_since + RELEASE_WITHIN - obs.now).total_seconds()
        assert left > 0, after.message
        assert d.requeue_after is not None and d.requeue_after <= left
    assert not released or obs.deleting


def _check_capacity(obs: Observations, d: Decision) -> None:
    """No weight moves toward a side without ready pods (the router scales for itself, or
    the new Deployment is gone: then legacy is strictly better), nor while the router is
    missing, nor back onto a missing legacy Deployment, nor through an object Segue may not
    write to (not labelled segue.dev/managed=true)."""
    for a in d.actions:
        if not isinstance(a, SetWeight):
            continue
        assert not obs.router_missing
        assert not obs.unmanaged
        current = obs.router_weight
        if current is None or a.weight == current:
            continue
        if a.weight > current:
            assert not obs.new_missing
            assert obs.router_manages_capacity or obs.new_ready > 0
        else:
            assert not obs.legacy_missing
            assert obs.router_manages_capacity or obs.new_missing or obs.legacy_ready > 0


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
    during=st.lists(ops(with_retry=False, with_revision=False, with_delete=False), max_size=25),
)
def test_a_rollback_always_reaches_weight_0(
    spec: RolloutSpec, prefix: list[Any], during: list[Any]
) -> None:
    driver = Driver(spec)
    driver.decide(0.0)
    for op in prefix:
        driver.apply(op)
    sim = driver.sim
    if sim.released:
        return  # deleted during the prefix
    sim.deleting_since = None  # (a deletion in the prefix is covered by the other property)
    sim.annotations.pop(RETRY, None)
    # Observe what the prefix left pending: a new revision restarts the plan, even from a
    # rollback, and it is seen only once the new Deployment is back.
    sim.new_missing = sim.legacy_missing = sim.router_missing = False
    sim.unmanaged = ()
    driver.decide(0.0)
    if sim.st.phase not in ("RollingBack", "RolledBack"):
        sim.annotations[ABORT] = "property test"
        driver.decide(0.0)
    if sim.st.phase not in ("RollingBack", "RolledBack"):
        return  # nothing to roll back from (e.g. Succeeded, or the abort was for it)
    for op in during:
        driver.apply(op)
    # The world settles: every object is back, the router follows, legacy pods are ready,
    # time passes.
    sim.follow = True
    sim.legacy_ready = 2
    sim.new_missing = sim.legacy_missing = sim.router_missing = False
    sim.unmanaged = ()
    for _ in range(400):
        if sim.st.phase == "RolledBack":
            break
        d = driver.decide(0.0 if sim.last is None else (sim.last.requeue_after or 1.0))
        assert d is not None
    assert sim.st.phase == "RolledBack", sim.st.message
    assert sim.router == 0 and sim.st.weight == 0
