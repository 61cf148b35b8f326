"""A round of gates against a scripted provider."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from segue.analysis.errors import ProviderError, ProviderUnavailable, QueryRejected
from segue.analysis.providers.base import RoundContext
from segue.analysis.providers.prometheus.runtime import evaluate_round
from segue.api.spec import Gate
from segue.engine import GateRound

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
CTX = RoundContext(
    namespace="shop",
    rollout="checkout",
    legacy_version="v1",
    new_version="v2",
    interval="30s",
    weight=10,
)


class Scripted:
    """Answers by the version label found in the query; records queries and threads."""

    name = "Prometheus"

    def __init__(
        self,
        answers: Mapping[str, float | ProviderError | None] | Callable[[str], float | None],
        delay: float = 0.0,
    ) -> None:
        self.answers = answers
        self.delay = delay
        self.queries: list[str] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def query_scalar(self, query: str) -> float | None:
        with self.lock:
            self.queries.append(query)
            self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        if callable(self.answers):
            return self.answers(query)
        for key, answer in self.answers.items():
            if key in query:
                if isinstance(answer, ProviderError):
                    raise answer
                return answer
        return None


def run(gates: list[Gate], provider: Scripted, ctx: RoundContext = CTX) -> GateRound:
    return asyncio.run(evaluate_round(gates, ctx, provider, NOW))


def test_round_with_templates():
    def answer(q: str) -> float | None:
        v2 = 'version="v2"' in q
        if q.startswith("(sum") and "=~" in q:  # error rate
            return 0.2 if v2 else 0.0
        if q.startswith("histogram_quantile"):
            return 0.1 if v2 else 0.09
        if q.startswith("sum(rate"):  # throughput
            return 20.0 if v2 else 180.0
        return 0.8 if v2 else 1.0  # success rate

    provider = Scripted(answer)
    gates = [Gate(name=t, template=t) for t in ("error-rate", "latency", "throughput")]
    gates.append(Gate(name="ok", template="success-rate"))
    r = run(gates, provider)
    assert r.evaluated_at == NOW and r.error is None
    by = {v.name: v for v in r.results}
    assert [v.name for v in r.results] == ["error-rate", "latency", "throughput", "ok"]
    assert (by["error-rate"].verdict, by["error-rate"].on_failure) == ("Fail", "rollback")
    assert by["error-rate"].legacy_value == 0.0  # shown even for an absolute bound
    assert by["latency"].verdict == "Pass"
    assert by["throughput"].verdict == "Pass" and by["throughput"].value == 200.0
    assert by["ok"].verdict == "Fail" and by["ok"].bound == ">= 0.95"
    assert len(provider.queries) == 8
    assert all('app="checkout"' in q for q in provider.queries)


def test_gates_run_concurrently_off_the_event_loop():
    provider = Scripted({"v2": 1.0, "v1": 1.0}, delay=0.3)
    gates = [
        Gate(name=f"g{i}", query=f'sum(x{i}{{v="{{{{ version }}}}"}})', max=2) for i in range(4)
    ]
    start = time.monotonic()
    r = run(gates, provider)
    elapsed = time.monotonic() - start
    assert [v.verdict for v in r.results] == ["Pass"] * 4
    assert len(provider.queries) == 8
    # Eight 0.3 s queries, run on worker threads, finish well before 8 x 0.3 s.
    assert elapsed < 1.5
    assert threading.get_ident() not in provider.threads


def test_identical_queries_run_once():
    provider = Scripted({"v2": 0.01, "v1": 0.0})
    same = 'sum(x{v="{{ version }}"})'
    r = run([Gate(name="a", query=same, max=1), Gate(name="b", query=same, min=0)], provider)
    assert [v.verdict for v in r.results] == ["Pass", "Pass"]
    assert sorted(provider.queries) == ['sum(x{v="v1"})', 'sum(x{v="v2"})']


def test_no_data_is_inconclusive():
    r = run([Gate(name="e", template="error-rate")], Scripted({}))
    (v,) = r.results
    assert v.verdict == "Inconclusive" and v.value is None and r.error is None


def test_provider_down_sets_round_error():
    down = ProviderUnavailable("cannot connect to Prometheus at http://x:9090")
    r = run(
        [Gate(name="e", template="error-rate"), Gate(name="l", template="latency")],
        Scripted({"v": down}),
    )
    assert r.error is not None and "unreachable for every query" in r.error
    assert [v.verdict for v in r.results] == ["Error", "Error"]
    assert "Prometheus unavailable for gate e" in str(r.results[0].message)


def test_partial_outage_is_per_gate():
    down = ProviderUnavailable("timeout")
    r = run(
        [
            Gate(name="a", query='sum(a{v="{{ version }}"})', max=1),
            Gate(name="b", query='sum(b{v="{{ version }}"})', max=1),
        ],
        Scripted({"sum(a": down, "sum(b": 0.5}),
    )
    assert r.error is None
    assert [v.verdict for v in r.results] == ["Error", "Pass"]


def test_rejected_query_names_the_gate():
    rejected = QueryRejected("1:5: parse error: unexpected end of input inside braces")
    r = run(
        [Gate(name="broken", query='sum(x{v="{{ version }}"', max=1)], Scripted({"sum": rejected})
    )
    (v,) = r.results
    assert v.verdict == "Error"
    assert v.message == (
        "Prometheus rejected the query of gate broken: "
        "1:5: parse error: unexpected end of input inside braces"
    )
    assert r.error is None


def test_legacy_failure_only_matters_for_ratio_bounds():
    down = ProviderUnavailable("timeout")
    answers: dict[str, float | ProviderError | None] = {'v="v2"': 0.5, 'v="v1"': down}
    absolute = run([Gate(name="a", query='sum(x{v="{{ version }}"})', max=1)], Scripted(answers))
    assert absolute.results[0].verdict == "Pass"
    assert absolute.results[0].legacy_value is None
    ratio = Gate(name="r", query='sum(x{v="{{ version }}"})', max_ratio_to_legacy=2)
    assert run([ratio], Scripted(answers)).results[0].verdict == "Error"


def test_misconfigured_gate_does_not_spoil_the_others():
    provider = Scripted({"v2": 0.01})
    r = run(
        [
            Gate(name="typo", query='sum(x{v="{{ verison }}"})', max=1, on_failure="pause"),
            Gate(name="fine", query='sum(x{v="{{ version }}"})', max=1),
        ],
        provider,
    )
    typo, fine = r.results
    assert typo.verdict == "Error" and "unknown placeholder {{ verison }}" in str(typo.message)
    assert (typo.on_failure, typo.bound) == ("pause", "<= 1")
    assert fine.verdict == "Pass"
    assert all("verison" not in q for q in provider.queries)


def test_invalid_version_is_an_error_naming_the_field():
    ctx = RoundContext("shop", "checkout", "v1", 'v2"} or vector(1)', "30s", 10)
    r = run([Gate(name="e", template="error-rate")], Scripted({}), ctx)
    (v,) = r.results
    assert (
        v.verdict == "Error" and "new version" in str(v.message) and "version 'v2" in str(v.message)
    )


def test_invalid_legacy_version_ignored_for_absolute_bounds():
    ctx = RoundContext("shop", "checkout", "v 1", "v2", "30s", 10)
    provider = Scripted({"v2": 0.0})
    assert run([Gate(name="e", template="error-rate")], provider, ctx).results[0].verdict == "Pass"
    lat = run([Gate(name="l", template="latency")], provider, ctx).results[0]
    assert lat.verdict == "Error" and "legacy version" in str(lat.message)


def test_ratio_gate_whose_query_ignores_the_version():
    r = run([Gate(name="r", query="sum(x)", max_ratio_to_legacy=2)], Scripted({"x": 1.0}))
    assert r.results[0].verdict == "Error"
    assert "same for both versions" in str(r.results[0].message)


def test_provider_bug_becomes_an_error_verdict():
    def boom(q: str) -> float | None:
        raise RuntimeError("bug")

    r = run([Gate(name="a", query='sum(x{v="{{ version }}"})', max=1)], Scripted(boom))
    assert r.results[0].verdict == "Error" and "RuntimeError: bug" in str(r.results[0].message)
    assert r.error is None


def test_empty_round():
    r = run([], Scripted({}))
    assert r.results == () and r.error is None
