"""GateRunner: Prometheus credentials through a short-lived Secret cache, and whole rounds
against real HTTP on loopback that end by their deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

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
    runner = GateRunner(secrets, "http://default:9090", clock=clock)  # type: ignore[arg-type]
    spec = Analysis.model_validate(
        {
            "prometheus": {"address": "http://prom:9090", "secretRef": {"name": "prom-auth"}},
            "gates": [{"name": "e", "template": "error-rate"}],
        }
    )
    for _ in range(5):
        settings = asyncio.run(runner.settings("shop", spec))
        clock.now += 5
    assert settings.bearer_token == "s3cret"
    assert secrets.reads == [("shop", "prom-auth")]


def test_a_round_against_a_silent_prometheus_ends_by_its_deadline(silent: str) -> None:
    gates = [
        {"name": f"g{i}", "query": f'sum(x{i}{{v="{{{{ version }}}}"}})', "max": 1}
        for i in range(16)
    ]
    spec = make_spec(analysis=analysis(*gates, prometheus={"address": silent, "timeout": "1s"}))
    runner = GateRunner(FakeSecrets(), None)  # type: ignore[arg-type]

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
    runner = GateRunner(secrets, None)  # type: ignore[arg-type]
    r = asyncio.run(runner.run("shop", "checkout", spec, 10))
    assert r.results == ()
    assert r.error == "Prometheus credentials: cannot read Secret shop/p: HTTP 404 Not Found"
