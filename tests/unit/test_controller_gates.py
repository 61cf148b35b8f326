"""GateRunner: which provider a Rollout's rounds use, credentials through a short-lived
Secret cache, and whole rounds against real HTTP on loopback that end by their deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from segue.analysis.providers.prometheus.client import PrometheusSettings
from segue.analysis.providers.prometheus.provider import PROMETHEUS
from segue.analysis.providers.prometheus.runtime import PrometheusConnection, PrometheusRuntime
from segue.api.provider import MetricProviderSpec
from segue.api.spec import Analysis
from segue.controller.gates import CachedSecrets, GateRunner, SecretUnreadable
from tests.unit.conftest import analysis, make_spec

pytestmark = pytest.mark.usefixtures("no_cached_providers")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSecrets:
    """Stands in for ``segue.controller.kube.Secrets``: scripted data or errors."""

    def __init__(self, data: dict[str, str] | None = None) -> None:
        self.data = data or {}
        self.error: Exception | None = None
        self.reads: list[tuple[str, str]] = []

    async def read(self, namespace: str, name: str) -> dict[str, str]:
        self.reads.append((namespace, name))
        if self.error is not None:
            raise self.error
        return dict(self.data)


class NotFound(Exception):
    """Shaped like the Kubernetes client's ApiException."""

    def __init__(self) -> None:
        super().__init__("(404)\nReason: Not Found\nHTTP response headers: ...\nbody")
        self.status = 404
        self.reason = "Not Found"


def cache(secrets: FakeSecrets, clock: Clock, **kw: Any) -> CachedSecrets:
    return CachedSecrets(secrets, clock=clock, **kw)  # type: ignore[arg-type]


def read(c: CachedSecrets, name: str = "prom") -> Any:
    return asyncio.run(c.read("shop", name))


def prometheus(default: str | None = None, *allowed: str) -> PrometheusRuntime:
    """Prometheus as the operator's flags configure it."""
    return PrometheusRuntime(default, allowed)


def settings_of(runner: GateRunner, analysis: Analysis) -> PrometheusSettings:
    """Where the runner sends this Rollout's queries, with which credentials."""
    connection = asyncio.run(runner.connect("shop", analysis))
    assert isinstance(connection, PrometheusConnection)
    return connection.settings


def test_a_secret_is_read_once_per_ttl() -> None:
    secrets, clock = FakeSecrets({"token": "a"}), Clock()
    c = cache(secrets, clock, ttl_s=30)
    assert read(c) == {"token": "a"}
    clock.now += 29
    secrets.data = {"token": "b"}
    assert read(c) == {"token": "a"}
    assert secrets.reads == [("shop", "prom")]
    clock.now += 2
    assert read(c) == {"token": "b"}
    assert len(secrets.reads) == 2
    # Per (namespace, name).
    read(c, "other")
    assert secrets.reads[-1] == ("shop", "other")
    c.forget("shop", "prom")
    read(c)
    assert len(secrets.reads) == 4


def test_a_failed_read_is_remembered_briefly_and_said_shortly() -> None:
    secrets, clock = FakeSecrets(), Clock()
    secrets.error = NotFound()
    c = cache(secrets, clock, failure_ttl_s=5)
    with pytest.raises(
        SecretUnreadable, match=r"^cannot read Secret shop/prom: HTTP 404 Not Found$"
    ):
        read(c)
    clock.now += 4
    with pytest.raises(SecretUnreadable, match="HTTP 404"):
        read(c)
    assert len(secrets.reads) == 1
    clock.now += 2
    secrets.error = None
    secrets.data = {"token": "created"}
    assert read(c) == {"token": "created"}


def test_recent_credentials_outlive_a_failed_read() -> None:
    secrets, clock = FakeSecrets({"token": "a"}), Clock()
    c = cache(secrets, clock, ttl_s=30, failure_ttl_s=5, stale_s=300)
    read(c)
    clock.now += 31
    secrets.error = ConnectionError("API server unreachable")
    assert read(c) == {"token": "a"}  # the API server is down: keep analysing
    clock.now += 1
    assert read(c) == {"token": "a"}
    assert len(secrets.reads) == 2  # the failure is remembered too
    clock.now += 300
    with pytest.raises(SecretUnreadable, match="API server unreachable"):
        read(c)


def test_the_cache_is_bounded() -> None:
    secrets, clock = FakeSecrets({"token": "a"}), Clock()
    c = cache(secrets, clock, max_entries=2)
    for name in ("a", "b", "c"):
        read(c, name)
    read(c, "c")
    read(c, "a")  # dropped as the oldest: read again
    assert [n for _, n in secrets.reads] == ["a", "b", "c", "a"]


def test_runner_settings_read_the_secret_once_per_ttl() -> None:
    secrets, clock = FakeSecrets({"token": "s3cret"}), Clock()
    runner = GateRunner(
        secrets,  # type: ignore[arg-type]
        [prometheus("http://default:9090", "http://prom:9090")],
        clock=clock,
    )
    spec = Analysis.model_validate(
        {
            "prometheus": {"address": "http://prom:9090", "secretRef": {"name": "prom-auth"}},
            "gates": [{"name": "e", "template": "error-rate"}],
        }
    )
    for _ in range(5):
        settings = settings_of(runner, spec)
        clock.now += 5
    assert settings.bearer_token == "s3cret"
    assert secrets.reads == [("shop", "prom-auth")]


def test_a_round_against_a_silent_prometheus_ends_by_its_deadline(silent: str) -> None:
    gates = [
        {"name": f"g{i}", "query": f'sum(x{i}{{v="{{{{ version }}}}"}})', "max": 1}
        for i in range(16)
    ]
    spec = make_spec(analysis=analysis(*gates, prometheus={"address": silent, "timeout": "1s"}))
    runner = GateRunner(FakeSecrets(), [prometheus(None, silent)])  # type: ignore[arg-type]

    start = time.monotonic()
    r = asyncio.run(asyncio.wait_for(runner.run("shop", "checkout", spec, 10), timeout=60))
    # 32 queries, 4 workers, 1 s each would be 8 s and more; the deadline is 3 s.
    assert time.monotonic() - start < 10
    assert r.error is not None and silent in r.error
    assert len(r.results) == 16 and all(v.verdict == "Error" for v in r.results)


def test_a_round_without_its_secret_says_so() -> None:
    secrets = FakeSecrets()
    secrets.error = NotFound()
    spec = make_spec(
        analysis=analysis(prometheus={"address": "http://prom:9090", "secretRef": {"name": "p"}})
    )
    runner = GateRunner(secrets, [prometheus(None, "http://prom:9090")])  # type: ignore[arg-type]
    r = asyncio.run(runner.run("shop", "checkout", spec, 10))
    assert r.results == ()
    assert r.error == "Prometheus credentials: cannot read Secret shop/p: HTTP 404 Not Found"


def test_a_refused_address_gets_no_query_and_its_secret_is_not_read() -> None:
    secrets = FakeSecrets({"token": "s3cret"})
    spec = make_spec(
        analysis=analysis(
            prometheus={"address": "http://internal.svc:8080", "secretRef": {"name": "p"}}
        )
    )
    runner = GateRunner(secrets, [prometheus("http://default:9090")])  # type: ignore[arg-type]
    assert runner.refusal(spec) is not None
    r = asyncio.run(runner.run("shop", "checkout", spec, 10))
    assert r.results == () and secrets.reads == []
    assert r.error is not None
    assert r.error.startswith("spec.analysis.prometheus.address: http://internal.svc:8080 is not")


def _provider(**prometheus: object) -> MetricProviderSpec:
    return MetricProviderSpec.model_validate({"prometheus": prometheus})


def test_a_metric_provider_brings_its_address_timeout_and_secret() -> None:
    secrets = FakeSecrets({"token": "platform-token"})
    shared = _provider(
        address="https://prom.monitoring:9090/",
        timeout="2s",
        secretRef={"namespace": "monitoring", "name": "prom-auth"},
    )
    runner = GateRunner(
        secrets,  # type: ignore[arg-type]
        metric_providers={"shared": shared}.get,
    )
    spec = make_spec(analysis=analysis(providerRef={"name": "shared"}))
    assert runner.refusal(spec) is None and runner.provider_problem(spec) is None
    assert spec.analysis is not None and runner.provider(spec) is PROMETHEUS
    settings = settings_of(runner, spec.analysis)
    # The MetricProvider's namespace, never the Rollout's.
    assert secrets.reads == [("monitoring", "prom-auth")]
    assert settings.address == "https://prom.monitoring:9090"
    assert settings.bearer_token == "platform-token" and settings.timeout_s == 2.0


def test_a_missing_or_invalid_metric_provider_is_named() -> None:
    runner = GateRunner(
        FakeSecrets(),  # type: ignore[arg-type]
        metric_providers={"broken": "its spec.prometheus is invalid: Field required"}.get,
    )
    gone = make_spec(analysis=analysis(providerRef={"name": "gone"}))
    broken = make_spec(analysis=analysis(providerRef={"name": "broken"}))
    assert runner.provider_problem(gone) == (
        "MetricProvider gone named in spec.analysis.providerRef (not found)"
    )
    assert runner.provider_problem(broken) == (
        "MetricProvider broken named in spec.analysis.providerRef "
        "(its spec.prometheus is invalid: Field required)"
    )
    r = asyncio.run(runner.run("shop", "checkout", gone, 10))
    assert r.results == ()
    assert r.error == "MetricProvider gone named in spec.analysis.providerRef not found"
