"""Batched gate queries against a fake Prometheus that answers by label values: a batched
verdict equals the single-Rollout verdict, batches split within their bounds, label values
with regex metacharacters select exactly their own series, custom queries run alone, and a
failing batch gives each Rollout the statuses its own queries would have given."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

import pytest

from segue.analysis.batcher import Batcher
from segue.analysis.batches import Series
from segue.analysis.clients import PooledClient
from segue.analysis.counting import QUERIES
from segue.analysis.errors import ProviderError, ProviderUnavailable, QueryRejected
from segue.analysis.providers.base import RoundContext
from segue.analysis.providers.prometheus.batching import (
    MAX_MATCHER_CHARS,
    MAX_MEMBERS,
    Family,
    Member,
    batch_refs,
)
from segue.analysis.providers.prometheus.runtime import evaluate_round
from segue.analysis.providers.prometheus.templates import TEMPLATE_NAMES
from segue.api.spec import Gate
from segue.controller.gates import next_tick
from segue.controller.metrics import OperatorMetrics
from segue.engine import GateRound

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
TEMPLATES = ("error-rate", "latency", "throughput", "success-rate")
# Each Rollout's app label value; the second and third are full of regex metacharacters,
# and the decoys would be selected too if they were not escaped.
APPS = ("checkout", "pay.ments|x", 'a"b\\c(d)*+?[e]{f}^$')
DECOYS = ("payXments|x", "pay.ments", "x", 'a"b\\c(d)*+?[e]{f}^')
VERSIONS = ("v1", "v2")


def ctx(rollout: str) -> RoundContext:
    return RoundContext("shop", rollout, "v1", "v2", "30s", weight=40)


def _unescape(literal: str) -> str:
    """A PromQL string literal's content as the value it stands for."""
    return re.sub(
        r"\\(x[0-9a-fA-F]{2}|.)",
        lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "x" else m.group(1),
        literal,
    )


def _which(query: str) -> str:
    if query.startswith("histogram_quantile"):
        return "latency"
    if "!~" in query:
        return "success-rate"
    if 'code=~"' in query:
        return "error-rate"
    return "throughput"


class LabelledPrometheus:
    """Series keyed by (template, app, version). A single query reads the one its ``app=``
    and ``version=`` matchers name; a batched one returns every series whose labels its
    ``=~`` regexes match in full (Python's re reads escaped punctuation as RE2 does)."""

    name = "Prometheus"

    def __init__(self, values: Mapping[tuple[str, str, str], float | None]) -> None:
        self.values = dict(values)
        self.scalar: list[str] = []
        self.vector: list[str] = []
        self.error: ProviderError | None = None
        self.lock = threading.Lock()

    def query_scalar(self, query: str) -> float | None:
        with self.lock:
            self.scalar.append(query)
        if self.error is not None:
            raise self.error
        app = re.search(r'app="((?:[^"\\]|\\.)*)"', query)
        version = re.search(r'version="((?:[^"\\]|\\.)*)"', query)
        if app is None or version is None:
            return 7.0  # a custom query
        key = (_which(query), _unescape(app.group(1)), _unescape(version.group(1)))
        return self.values.get(key)

    def query_vector(self, query: str) -> list[Series]:
        with self.lock:
            self.vector.append(query)
        if self.error is not None:
            raise self.error
        apps = re.search(r'app=~"((?:[^"\\]|\\.)*)"', query)
        versions = re.search(r'version=~"((?:[^"\\]|\\.)*)"', query)
        assert apps is not None and versions is not None, query
        app_re, version_re = _unescape(apps.group(1)), _unescape(versions.group(1))
        template = _which(query)
        return [
            ({"app": app, "version": version}, value)
            for (t, app, version), value in self.values.items()
            if t == template and re.fullmatch(app_re, app) and re.fullmatch(version_re, version)
        ]


def dataset() -> dict[tuple[str, str, str], float | None]:
    values: dict[tuple[str, str, str], float | None] = {}
    for t_index, template in enumerate(TEMPLATES):
        for a_index, app in enumerate(APPS + DECOYS):
            for v_index, version in enumerate(VERSIONS):
                values[(template, app, version)] = 0.01 * (1 + t_index + 3 * a_index) * (
                    1 + v_index
                ) + (0 if template != "throughput" else 50)
    values[("latency", APPS[1], "v1")] = None  # no data on one side
    return values


def gates(app: str) -> list[Gate]:
    return [Gate(name=t, template=t, labels={"app": app}) for t in TEMPLATES]


def rollouts() -> list[tuple[list[Gate], RoundContext]]:
    return [(gates(app), ctx(f"r{i}")) for i, app in enumerate(APPS)]


async def _rounds(
    client: PooledClient, batcher: Batcher | None, plans: list[tuple[list[Gate], RoundContext]]
) -> list[GateRound]:
    return list(
        await asyncio.gather(
            *(evaluate_round(g, c, client, NOW, batcher=batcher) for g, c in plans)
        )
    )


@pytest.fixture
def counted() -> Iterator[list[tuple[str, str, int]]]:
    seen: list[tuple[str, str, int]] = []

    def listener(provider: str, template: str, served: int) -> None:
        seen.append((provider, template, served))

    QUERIES.listeners.append(listener)
    yield seen
    QUERIES.listeners.remove(listener)


def run_both(
    fake: LabelledPrometheus, plans: list[tuple[list[Gate], RoundContext]]
) -> tuple[list[GateRound], list[GateRound]]:
    client = PooledClient.standalone(fake)
    try:
        single = asyncio.run(_rounds(client, None, plans))
        batched = asyncio.run(_rounds(client, Batcher(gather_s=0.05), plans))
    finally:
        client.pool.shutdown()
    return single, batched


def test_every_template_batched_equals_single(counted):
    fake = LabelledPrometheus(dataset())
    single, batched = run_both(fake, rollouts())
    assert batched == single
    verdicts = {s.verdict for r in single for s in r.results}
    assert {"Pass", "Fail", "Inconclusive"} <= verdicts  # the data exercises the judge
    assert all(s.value is not None for r in single for s in r.results if s.name != "latency")
    # Single: 3 Rollouts x 4 templates x 2 versions; batched: one query per template.
    assert len(fake.scalar) == 3 * 4 * 2
    assert sorted(_which(q) for q in fake.vector) == sorted(TEMPLATES)
    batches = [c for c in counted if c[2] > 1]
    assert sorted(t for _, t, _ in batches) == sorted(TEMPLATES)
    assert all(served == 6 for _, _, served in batches)


def test_template_names_are_all_batched():
    """Every built-in template has a batched form this module exercises."""
    assert set(TEMPLATE_NAMES) == set(TEMPLATES)
    for template in TEMPLATE_NAMES:
        refs = batch_refs(Gate(name="g", template=template), ctx("r"))
        assert refs is not None
        new, legacy = refs
        assert new.family == legacy.family and new.member != legacy.member


def throughput_family() -> Family:
    refs = batch_refs(Gate(name="g", template="throughput"), ctx("r"))
    assert refs is not None and isinstance(refs[0].family, Family)
    return refs[0].family


def test_large_batches_split_within_bounds():
    family = throughput_family()
    members = [Member(f"app-{i:04d}", v) for i in range(150) for v in VERSIONS]
    chunks = family.chunks(members)
    assert [len(part) for _, part in chunks] == [MAX_MEMBERS, 300 - MAX_MEMBERS]
    assert sorted(map(repr, (m for _, part in chunks for m in part))) == sorted(map(repr, members))
    long = [Member("x" * 500 + str(i), "v1") for i in range(20)]
    chunks = family.chunks(long)
    assert len(chunks) > 1
    for query, part in chunks:
        alternation = re.search(r'app=~"([^"]*)"', query)
        assert alternation is not None and len(alternation.group(1)) <= MAX_MATCHER_CHARS
        assert len(part) >= 1
    assert sorted(map(repr, (m for _, part in chunks for m in part))) == sorted(map(repr, long))


def test_escaped_values_select_only_their_own_series():
    family = throughput_family()
    member = Member(APPS[2], "v2")
    ((query, _),) = family.chunks([member])
    fake = LabelledPrometheus(dataset())
    series = fake.query_vector(query)
    assert [labels["app"] for labels, _ in series] == [APPS[2]]
    assert family.pick(series, member) == dataset()[("throughput", APPS[2], "v2")]
    assert family.pick(series, Member(DECOYS[3], "v2")) is None


def test_custom_queries_run_alone():
    custom = Gate(name="custom", query='sum(x{v="{{ version }}"})', max=10)
    plans = [([custom, *gates(app)], ctx(f"r{i}")) for i, app in enumerate(APPS[:2])]
    fake = LabelledPrometheus(dataset())
    client = PooledClient.standalone(fake)
    try:
        rounds = asyncio.run(_rounds(client, Batcher(gather_s=0.05), plans))
    finally:
        client.pool.shutdown()
    assert all(r.results[0].verdict == "Pass" and r.results[0].value == 7.0 for r in rounds)
    # Two Rollouts x two versions of the custom query (the same text for both Rollouts, but
    # each round runs its own); every template in one batch.
    assert sorted(fake.scalar) == ['sum(x{v="v1"})'] * 2 + ['sum(x{v="v2"})'] * 2
    assert len(fake.vector) == len(TEMPLATES)


@pytest.mark.parametrize(
    "error",
    [
        ProviderUnavailable("cannot connect to Prometheus at http://x:9090"),
        QueryRejected("parse error"),
    ],
)
def test_a_failing_batch_gives_the_statuses_of_single_queries(error):
    fake = LabelledPrometheus(dataset())
    fake.error = error
    single, batched = run_both(fake, rollouts())
    assert batched == single
    assert all(s.verdict == "Error" for r in batched for s in r.results)
    assert {r.error is not None for r in batched} == {isinstance(error, ProviderUnavailable)}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ticks_share_one_query_and_idle_rollouts_drop_out():
    fake = LabelledPrometheus(dataset())
    clock = Clock()
    batcher = Batcher(gather_s=0.01, clock=clock)
    family_gates = [Gate(name="t", template="throughput", labels={"app": a}) for a in APPS[:2]]
    a, b = [([g], ctx(f"r{i}")) for i, g in enumerate(family_gates)]

    async def scenario() -> None:
        client = PooledClient.standalone(fake)
        try:
            await _rounds(client, batcher, [a, b])  # together: one query
            assert len(fake.vector) == 1
            clock.now = 30.0
            await _rounds(client, batcher, [a])  # next tick: A's batch includes B ...
            await _rounds(client, batcher, [b])  # ... which reads it, no query of its own
            assert len(fake.vector) == 2
            assert APPS[1].replace(".", "\\\\.").replace("|", "\\\\|") in fake.vector[1]
            clock.now = 90.0  # B is idle for two intervals: it drops out
            await _rounds(client, batcher, [a])
            assert len(fake.vector) == 3 and "pay" not in fake.vector[2]
            clock.now = 300.0  # nobody asks: no query at all
            await asyncio.sleep(0.05)
            assert len(fake.vector) == 3
        finally:
            client.pool.shutdown()

    asyncio.run(scenario())


def test_round_ticks_align_on_the_interval_grid():
    assert next_tick(7.0, 30.0) == 30.0  # the first round: at least half an interval on
    assert next_tick(20.0, 30.0) == 60.0
    assert next_tick(30.02, 30.0) == 60.0  # then one interval apart, on the grid
    assert next_tick(60.3, 2.0) == 62.0


def test_operator_metrics_count_queries_and_batch_sizes():
    metrics = OperatorMetrics()
    metrics.metric_query("Prometheus", "error-rate", 40)
    metrics.metric_query("Prometheus", "custom", 1)
    sample = metrics.registry.get_sample_value
    labels = {"provider": "Prometheus", "template": "error-rate"}
    assert sample("segue_metric_queries_total", labels) == 1.0
    assert sample("segue_metric_query_batch_size_count", {"provider": "Prometheus"}) == 2.0
    assert sample("segue_metric_query_batch_size_sum", {"provider": "Prometheus"}) == 41.0


class Hanging(LabelledPrometheus):
    """Answers nothing until released."""

    def __init__(self) -> None:
        super().__init__({})
        self.release = threading.Event()
        self.calls: list[str] = []

    def query_scalar(self, query: str) -> float | None:
        self.calls.append("scalar")
        self.release.wait(10)
        return super().query_scalar(query)

    def query_vector(self, query: str) -> list[Series]:
        self.calls.append("vector")
        self.release.wait(10)
        return super().query_vector(query)


def test_a_hanging_batch_ends_by_the_deadline_like_single_queries():
    plans = [([Gate(name="errors", template="error-rate")], ctx("r0"))]
    rounds = []
    for batcher in (None, Batcher(gather_s=0.01)):
        fake = Hanging()
        client = PooledClient.standalone(fake, timeout_s=0.2)
        try:
            rounds.append(asyncio.run(_rounds(client, batcher, plans))[0])
        finally:
            fake.release.set()
            client.pool.shutdown()
        assert fake.calls == (["vector"] if batcher else ["scalar", "scalar"])
    single, batched = rounds
    assert batched == single
    (status,) = batched.results
    assert status.verdict == "Error" and "did not answer within 1.2s" in (status.message or "")
    assert batched.error is not None and "unreachable for every query" in batched.error
