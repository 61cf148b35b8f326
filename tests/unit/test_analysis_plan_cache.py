"""The rounds' plan cache: a gate is planned once for a Rollout's names, versions and
interval, whatever the weight; a new spec generation (new gate objects), another version
or another Rollout is planned anew; the cache is bounded; a gate that cannot be planned
is never kept; and a cached plan gives the round the verdict a fresh plan gives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from segue.analysis.providers.base import RoundContext
from segue.analysis.providers.prometheus import planning
from segue.analysis.providers.prometheus.planning import GateMisconfigured, PlanCache, QueryPlan
from segue.analysis.providers.prometheus.runtime import evaluate_round
from segue.api.spec import Gate
from segue.engine import GateRound

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def ctx(rollout: str = "r", new: str = "v2", weight: float = 25) -> RoundContext:
    return RoundContext("shop", rollout, "v1", new, "30s", weight=weight)


def error_rate() -> Gate:
    return Gate(name="errors", template="error-rate", labels={"app": "checkout"})


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The gates ``plan_gate`` was called for, in order."""
    calls: list[str] = []
    real: Callable[[Gate, RoundContext], QueryPlan] = planning.plan_gate

    def counting(gate: Gate, c: RoundContext) -> QueryPlan:
        calls.append(gate.name)
        return real(gate, c)

    monkeypatch.setattr(planning, "plan_gate", counting)
    return calls


def test_a_gate_is_planned_once_for_a_rollout_whatever_the_weight(planned: list[str]) -> None:
    cache, gate = PlanCache(), error_rate()
    first = cache.plan(gate, ctx(weight=10))
    again = cache.plan(gate, ctx(weight=50))
    assert again is first
    assert planned == ["errors"]
    assert first == planning.plan_gate(gate, ctx())  # what planning afresh gives


def test_a_new_generation_another_version_or_rollout_is_planned_anew(
    planned: list[str],
) -> None:
    cache, gate = PlanCache(), error_rate()
    first = cache.plan(gate, ctx())
    # An equal gate of a new spec generation is another object: planned again.
    assert cache.plan(error_rate(), ctx()) == first
    other_version = cache.plan(gate, ctx(new="v3"))
    assert "v3" in other_version.new_query and "v3" not in first.new_query
    other_rollout = cache.plan(gate, ctx(rollout="other"))
    assert other_rollout is not first
    assert len(planned) == 4


def test_the_cache_is_bounded_least_recently_used_out(planned: list[str]) -> None:
    cache = PlanCache(size=2)
    a, b, c = error_rate(), error_rate(), error_rate()
    cache.plan(a, ctx())
    cache.plan(b, ctx())
    cache.plan(a, ctx())  # a is now the most recently used
    cache.plan(c, ctx())  # b goes
    assert len(cache) == 2
    planned.clear()
    cache.plan(a, ctx())
    assert planned == []
    cache.plan(b, ctx())
    assert planned == ["errors"]


def test_a_gate_that_cannot_be_planned_is_not_kept(planned: list[str]) -> None:
    cache = PlanCache()
    broken = Gate(name="broken", query="rate(x{version='{{ nope }}'}[1m])", max=1)
    for _ in range(2):
        with pytest.raises(GateMisconfigured):
            cache.plan(broken, ctx())
    assert planned == ["broken", "broken"]
    assert len(cache) == 0


class _Answers:
    """A query client answering each query with the same value, recording the queries."""

    name = "Prometheus"

    def __init__(self, value: float) -> None:
        self.value = value
        self.queries: list[str] = []

    def query_scalar(self, query: str) -> float | None:
        self.queries.append(query)
        return self.value


def _round(gates: list[Gate], client: _Answers, plans: PlanCache | None) -> GateRound:
    return asyncio.run(evaluate_round(gates, ctx(), client, NOW, plans=plans))


def test_a_round_on_cached_plans_judges_as_one_planned_afresh() -> None:
    gates = [error_rate(), Gate(name="slow", template="latency", labels={"app": "checkout"})]
    cache = PlanCache()
    verdicts = []
    for value in (0.001, 0.5):  # a pass, then a failure, with the plans kept between
        fresh_client, cached_client = _Answers(value), _Answers(value)
        fresh = _round(gates, fresh_client, None)
        cached = _round(gates, cached_client, cache)
        judged = [(r.name, r.verdict, r.value) for r in cached.results]
        assert judged == [(r.name, r.verdict, r.value) for r in fresh.results]
        assert sorted(cached_client.queries) == sorted(fresh_client.queries)
        verdicts.append([verdict for _, verdict, _ in judged])
    assert verdicts[0] != verdicts[1]  # the second round judged the new numbers
    assert len(cache) == 2
