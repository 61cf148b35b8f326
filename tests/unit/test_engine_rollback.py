"""Rollbacks: immediate and graceful, onto ready capacity only, then retry."""

from __future__ import annotations

import math
from datetime import timedelta

from segue.engine import SetWeight
from tests.unit.conftest import Sim, make_spec


def _at(weight_step: int, **spec: object) -> Sim:
    """A Rollout whose router is at the weight of plan step ``weight_step`` (low preset)."""
    sim = Sim(make_spec(risk="low", hold="1s", **spec))
    sim.run(lambda s: s.st.step == weight_step + 1)
    return sim


def _abort(sim: Sim, reason: str = "bad release") -> None:
    sim.annotations["segue.dev/abort"] = reason
    sim.tick(1)


def test_immediate_rollback_is_one_weight_0() -> None:
    sim = _at(4)  # 50%
    _abort(sim)
    assert sim.phase() == "RollingBack"
    assert sim.weights[-1] == 0
    assert sim.st.rollback is not None
    assert (sim.st.rollback.mode, sim.st.rollback.from_weight) == ("immediate", 50)
    assert sim.st.rollback.reason == "aborted: bad release"
    sim.tick(1)
    assert sim.phase() == "RolledBack"
    assert sim.st.weight == 0
    stalled = sim.st.condition("Stalled")
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "RolledBack")
    assert sim.last is not None and sim.last.requeue_after is None


def test_rolled_back_only_once_the_router_reports_0() -> None:
    sim = _at(2)
    sim.follow = False
    _abort(sim)
    d = sim.tick(1)
    assert sim.phase() == "RollingBack"
    assert d.actions == (SetWeight(0),)
    sim.router = 0
    sim.tick(1)
    assert sim.phase() == "RolledBack"


def test_graceful_ramp_is_linear_and_reaches_0() -> None:
    sim = _at(6, rollback={"mode": "graceful", "duration": "100s"})  # 75%
    _abort(sim)
    start = sim.st.rollback.started_at if sim.st.rollback else None
    assert start is not None and sim.rollback_mode() == "graceful"
    seen: list[int] = []
    d = sim.last
    while sim.phase() == "RollingBack":
        assert d is not None
        assert d.requeue_after is None or d.requeue_after >= 1.0
        elapsed = (sim.now - start).total_seconds()
        expected = max(0, math.ceil(75 * (1 - (elapsed + 0.001) / 100)))
        assert sim.st.target_weight == expected
        seen.append(sim.st.target_weight)
        d = sim.tick(d.requeue_after or 1.0)
    assert sim.phase() == "RolledBack"
    assert seen == sorted(seen, reverse=True)
    # The ramp ends at 100 s; one router poll later the Rollout is RolledBack.
    assert sim.now - start <= timedelta(seconds=106)
    # One SetWeight per whole-percent change: no repeats of a value already in effect.
    ramp = sim.weights[sim.weights.index(75) + 1 :]
    assert len(ramp) == len(set(ramp))


def test_graceful_requeue_is_the_time_to_the_next_percent() -> None:
    sim = _at(4, rollback={"mode": "graceful", "duration": "50s"})  # 50%: 1 s per percent
    _abort(sim)
    d = sim.tick(0.25)
    assert d.requeue_after == 1.0


def test_rollback_waits_for_ready_legacy_pods() -> None:
    sim = _at(2)
    sim.legacy_ready = 0
    _abort(sim)
    assert sim.phase() == "RollingBack"
    assert 0 not in sim.weights
    assert "checkout-v1" in (sim.st.message or "")
    sim.legacy_ready = 2
    d = sim.tick(1)
    assert SetWeight(0) in d.actions


def test_rollback_with_a_scaling_router_does_not_wait() -> None:
    sim = _at(2)
    sim.legacy_ready = 0
    sim.manages_capacity = True
    _abort(sim)
    assert sim.weights[-1] == 0


def test_rollback_never_raises_the_weight() -> None:
    sim = _at(6, rollback={"mode": "graceful", "duration": "100s"})
    sim.follow = False
    _abort(sim)
    sim.router = 10  # someone moved traffic back by hand
    d = sim.tick(1)
    assert all(a.weight <= 10 for a in d.actions if isinstance(a, SetWeight))


def test_abort_during_graceful_rollback_escalates() -> None:
    sim = _at(6, rollback={"mode": "graceful", "duration": "10m"})
    _abort(sim)
    sim.annotations["segue.dev/abort"] = "now please"
    sim.tick(1)
    assert sim.rollback_mode() == "immediate"
    assert sim.weights[-1] == 0


def test_retry_after_rollback_restarts_at_step_0() -> None:
    sim = _at(4)
    _abort(sim)
    sim.tick(1)
    assert sim.phase() == "RolledBack"
    sim.annotations["segue.dev/retry"] = ""
    d = sim.tick(1)
    assert sim.phase() == "Progressing"
    assert sim.st.step == 0 and sim.st.rollback is None
    assert SetWeight(10) in d.actions
    assert "Retried" in sim.history_events()


def test_new_revision_after_rollback_restarts() -> None:
    sim = _at(2)
    _abort(sim)
    sim.tick(1)
    sim.revision = "r2"
    sim.tick(1)
    assert sim.phase() == "Progressing"
    assert sim.st.new_revision == "r2"
