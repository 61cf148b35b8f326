"""The Prometheus client against a scripted HTTP server on loopback, the shared client
cache, and the provider's place in the catalog and registry."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from segue.analysis import clients as clients_module
from segue.analysis.clients import PooledClient, QueryClient, close_clients
from segue.analysis.errors import PoolSaturated, ProviderUnavailable, QueryRejected, UnusableResult
from segue.analysis.providers import catalog, registry
from segue.analysis.providers.prometheus.client import (
    MAX_ERROR_CHARS,
    PrometheusClient,
    PrometheusSettings,
    _parse_status_error,
    parse_result,
)
from segue.analysis.providers.prometheus.provider import PROMETHEUS
from segue.analysis.providers.prometheus.runtime import (
    RUNTIME,
    PrometheusRuntime,
    client_for_settings,
    operator_default_address,
)


def vector(*values: str) -> dict[str, object]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"i": str(i)}, "value": [1700000000.0, v]} for i, v in enumerate(values)
            ],
        },
    }


def error(status: str, kind: str, text: str) -> dict[str, object]:
    return {"status": status, "errorType": kind, "error": text}


@dataclass
class FakePrometheus:
    """Answers /api/v1/query with scripted (status, body) pairs; the last one repeats."""

    answers: list[tuple[int, object]] = field(default_factory=list)
    requests: list[dict[str, object]] = field(default_factory=list)
    url: str = ""

    def answer(self) -> tuple[int, object]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    state = FakePrometheus()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            state.requests.append(
                {"path": url.path, "params": parse_qs(url.query), "headers": dict(self.headers)}
            )
            status, body = state.answer()
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere?query=up")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def provider(url: str, **kw: object) -> tuple[PrometheusClient, list[float]]:
    sleeps: list[float] = []
    settings = PrometheusSettings(
        address=url,
        timeout_s=float(kw.pop("timeout_s", 2.0)),  # type: ignore[arg-type]
        bearer_token=kw.pop("bearer_token", None),  # type: ignore[arg-type]
    )
    return PrometheusClient(settings, sleep=sleeps.append, **kw), sleeps  # type: ignore[arg-type]


# --- result parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ([{"metric": {}, "value": [1.0, "0.25"]}], 0.25),
        ([1.0, "3"], 3.0),
        ([], None),
        ([{"metric": {}, "value": [1.0, "NaN"]}], None),
        ([{"metric": {}, "value": [1.0, "+Inf"]}], None),
        ([{"metric": {}, "value": [1.0, "-Inf"]}], None),
        ([1.0, "NaN"], None),
    ],
)
def test_parse_result(result, expected):
    assert parse_result(result) == expected


def test_several_series_must_be_aggregated():
    item = {"metric": {}, "value": [1.0, "1"]}
    with pytest.raises(UnusableResult, match=r"^query returns 3 series; aggregate it \(e.g. sum"):
        parse_result([item, item, item])


def test_range_vector_and_string_are_refused():
    with pytest.raises(UnusableResult, match="range vector"):
        parse_result([{"metric": {}, "values": [[1.0, "1"]]}])
    with pytest.raises(UnusableResult, match="string"):
        parse_result([1.0, "hello"])
    assert issubclass(UnusableResult, QueryRejected)


def test_parse_status_error():
    body = json.dumps(error("error", "bad_data", 'invalid parameter "query": 1:5: parse error'))
    message = f"HTTP Status Code 400 ({body.encode()!r})"
    assert _parse_status_error(message) == (400, 'invalid parameter "query": 1:5: parse error')
    # Anything but a Prometheus error reply keeps only the status.
    assert _parse_status_error("HTTP Status Code 502 (b'Bad Gateway')") == (502, None)
    assert _parse_status_error("something else") == (None, None)
    not_prometheus = json.dumps({"error": "looks like Prometheus"})
    assert _parse_status_error(f"HTTP Status Code 404 ({not_prometheus.encode()!r})") == (404, None)
    long = json.dumps(error("error", "bad_data", "x" * 5000 + "\nsecond line"))
    status, text = _parse_status_error(f"HTTP Status Code 400 ({long.encode()!r})")
    assert status == 400 and text is not None
    assert len(text) == MAX_ERROR_CHARS and text.endswith("…") and "\n" not in text


SECRET_REPLY = b"internal-service-secret-" + b"A" * 600


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            200,
            SECRET_REPLY,
            "did not answer like Prometheus (HTTP 200, not a Prometheus API reply)",
        ),
        (200, {"status": "success", "data": SECRET_REPLY.decode()}, "did not answer like"),
        (
            200,
            {"status": "success", "data": {"result": [{"value": [1, SECRET_REPLY.decode()]}]}},
            "query returns a string, not a number",
        ),
        (404, SECRET_REPLY, "answered HTTP 404, not a Prometheus error reply"),
        (403, SECRET_REPLY, "answered HTTP 403, not a Prometheus error reply (check the bearer"),
        (503, SECRET_REPLY, "answered HTTP 503, not a Prometheus error reply (after 3 attempts)"),
        (400, SECRET_REPLY, "HTTP 400, not a Prometheus error reply"),
    ],
)
def test_no_part_of_a_reply_reaches_a_message(fake, status, body, expected):
    fake.answers = [(status, body)]
    p, _ = provider(fake.url)
    with pytest.raises((ProviderUnavailable, QueryRejected)) as info:
        p.query_scalar("up")
    assert expected in str(info.value)
    assert "internal-service-secret" not in str(info.value)
    assert "AAAA" not in str(info.value)


def test_redirects_are_not_followed(fake):
    fake.answers = [(302, b"")]
    p, _ = provider(fake.url, bearer_token="s3cret")
    with pytest.raises(ProviderUnavailable, match="redirect, which is not followed"):
        p.query_scalar("up")
    assert len(fake.requests) == 1


def test_proxy_settings_of_the_environment_are_ignored(fake, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    fake.answers = [(200, vector("1"))]
    p, _ = provider(fake.url)
    assert p.query_scalar("up") == 1.0


# --- over HTTP -----------------------------------------------------------------------------


def test_value_and_request(fake):
    fake.answers = [(200, vector("0.125"))]
    p, _ = provider(fake.url, bearer_token="s3cret", timeout_s=2.5)
    assert p.query_scalar('sum(rate(x{v="v2"}[1m]))') == 0.125
    (req,) = fake.requests
    assert req["path"] == "/api/v1/query"
    assert req["params"] == {"query": ['sum(rate(x{v="v2"}[1m]))'], "timeout": ["2.5s"]}
    assert req["headers"]["Authorization"] == "Bearer s3cret"


def test_no_authorization_header_without_token(fake):
    fake.answers = [(200, vector())]
    p, _ = provider(fake.url)
    assert p.query_scalar("x") is None
    assert "Authorization" not in fake.requests[0]["headers"]


def test_bad_query_is_rejected_without_retry(fake):
    text = 'invalid parameter "query": 1:5: parse error: unexpected end of input inside braces'
    fake.answers = [(400, error("error", "bad_data", text))]
    p, sleeps = provider(fake.url)
    with pytest.raises(QueryRejected) as e:
        p.query_scalar("foo{")
    assert e.value.detail == text
    assert len(fake.requests) == 1 and sleeps == []


def test_execution_error_is_rejected(fake):
    fake.answers = [(422, error("error", "execution", "many-to-many matching not allowed"))]
    p, _ = provider(fake.url)
    with pytest.raises(QueryRejected, match="many-to-many"):
        p.query_scalar("a / b")


def test_5xx_is_retried_then_succeeds(fake):
    fake.answers = [(503, error("error", "unavailable", "busy")), (200, vector("7"))]
    p, sleeps = provider(fake.url, retries=2, backoff_s=0.1)
    assert p.query_scalar("x") == 7.0
    assert len(fake.requests) == 2 and sleeps == [0.1]


def test_5xx_retries_are_bounded(fake):
    fake.answers = [(500, b"internal error")]
    p, sleeps = provider(fake.url, retries=2, backoff_s=0.1)
    with pytest.raises(ProviderUnavailable, match=r"HTTP 500.*after 3 attempts"):
        p.query_scalar("x")
    assert len(fake.requests) == 3 and sleeps == [0.1, 0.2]


def test_unauthorized_is_unavailable_not_retried(fake):
    fake.answers = [(401, b"Unauthorized")]
    p, sleeps = provider(fake.url, bearer_token="wrong")
    with pytest.raises(ProviderUnavailable, match="bearer token"):
        p.query_scalar("x")
    assert len(fake.requests) == 1 and sleeps == []


def test_not_prometheus(fake):
    fake.answers = [(200, b"<html>hello</html>")]
    p, _ = provider(fake.url)
    with pytest.raises(ProviderUnavailable, match="did not answer like Prometheus"):
        p.query_scalar("x")


def test_connection_refused_is_retried_then_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The port is free again: nothing listens there.
    p, sleeps = provider(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.05)
    with pytest.raises(ProviderUnavailable, match=r"cannot connect.*after 3 attempts"):
        p.query_scalar("x")
    assert sleeps == [0.05, 0.1]


def test_silent_server_times_out_quickly():
    # A listening socket that never answers: the connection succeeds, the answer never comes.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        p, sleeps = provider(f"http://127.0.0.1:{s.getsockname()[1]}", timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(ProviderUnavailable, match=r"did not answer within 0.3s"):
            p.query_scalar("x")
        assert time.monotonic() - start < 2
        assert sleeps == []


def test_ca_file_and_positive_timeout(tmp_path):
    ca = tmp_path / "ca.pem"
    p = PrometheusClient(
        PrometheusSettings(address="https://prom:9090", ca_file=str(ca), timeout_s=1)
    )
    assert p._client()._session.verify == str(ca)
    p.close()
    with pytest.raises(ValueError):
        PrometheusClient(PrometheusSettings(timeout_s=0))


def test_retries_keep_to_the_timeout():
    # Each retry waits longer; once a pause would reach past the query's timeout, the
    # query gives up instead of running over it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    p = PrometheusClient(
        PrometheusSettings(address=f"http://127.0.0.1:{port}", timeout_s=1.0),
        retries=5,
        backoff_s=0.4,
        sleep=sleep,
        clock=lambda: now[0],
    )
    with pytest.raises(ProviderUnavailable, match=r"after 2 attempts, no time left within 1s"):
        p.query_scalar("x")
    assert sleeps == [0.4]


def test_timeout_is_capped():
    assert PrometheusSettings(timeout_s=90).timeout_s == 30.0
    assert PrometheusSettings(timeout_s=float("inf")).timeout_s == 30.0
    assert PrometheusSettings(timeout_s=float("nan")).timeout_s == 30.0
    assert PrometheusSettings(timeout_s=2.5).timeout_s == 2.5


def test_threads_get_their_own_client():
    p = PrometheusClient(PrometheusSettings())
    clients = []
    t = threading.Thread(target=lambda: clients.append(p._client()))
    t.start()
    t.join()
    assert clients[0] is not p._client()
    assert p._client() is p._client()


# --- settings and registry -----------------------------------------------------------------


def test_address_defaults(monkeypatch):
    monkeypatch.delenv("SEGUE_PROMETHEUS_ADDRESS", raising=False)
    assert operator_default_address(None) == "http://127.0.0.1:9090"
    monkeypatch.setenv("SEGUE_PROMETHEUS_ADDRESS", "http://prometheus.monitoring:9090/")
    assert operator_default_address(None) == "http://prometheus.monitoring:9090"
    assert operator_default_address("http://mine:9090/") == "http://mine:9090"
    # A Rollout without a section of its own goes to the operator's default address.
    settings = asyncio.run(PrometheusRuntime().settings(None, "shop", NoSecrets()))
    assert settings == PrometheusSettings(address="http://prometheus.monitoring:9090")


class NoSecrets:
    async def read(self, namespace: str, name: str) -> dict[str, str]:
        raise AssertionError("no Secret is named")


def test_token_is_not_in_repr():
    assert "s3cret" not in repr(PrometheusSettings(bearer_token="s3cret"))


@pytest.fixture
def no_cached_providers() -> Iterator[None]:
    close_clients()
    yield
    close_clients()


def test_catalog_and_registry(no_cached_providers):
    assert catalog.PROVIDERS[0] is PROMETHEUS and catalog.DEFAULT is PROMETHEUS
    assert catalog.by_key("prometheus") is PROMETHEUS
    with pytest.raises(KeyError, match="no metric provider 'influx'; known: prometheus"):
        catalog.by_key("influx")
    assert registry.runtimes()["prometheus"] is RUNTIME and RUNTIME.provider is PROMETHEUS
    configured = PrometheusRuntime("http://prom:9090")
    assert registry.runtimes([configured])["prometheus"] is configured

    class Stranger(PrometheusRuntime):
        @property
        def provider(self):
            return dataclasses.replace(PROMETHEUS, key="influx")

    with pytest.raises(ValueError, match="not in the catalog of metric providers: influx"):
        registry.runtimes([Stranger()])


def test_clients_are_shared_per_settings(no_cached_providers):
    shared = client_for_settings(PrometheusSettings(address="http://b:9090"))
    assert isinstance(shared, PooledClient) and isinstance(shared.client, PrometheusClient)
    assert isinstance(shared.client, QueryClient) and shared.name == "Prometheus"
    assert client_for_settings(PrometheusSettings(address="http://b:9090")) is shared
    assert client_for_settings(PrometheusSettings(address="http://c:9090")) is not shared


def test_one_pool_per_address(no_cached_providers):
    b = client_for_settings(PrometheusSettings(address="http://b:9090", timeout_s=2))
    b_token = client_for_settings(PrometheusSettings(address="http://b:9090", bearer_token="t"))
    c = client_for_settings(PrometheusSettings(address="http://c:9090"))
    # Other credentials or timeout: another client, the same workers.
    assert b_token is not b and b_token.pool is b.pool
    assert c.pool is not b.pool
    assert b.label == "Prometheus at http://b:9090" and b.timeout_s == 2.0
    assert b.query_deadline_s == 3.0 and b.round_deadline_s == 5.0
    long = client_for_settings(PrometheusSettings(address="http://d:9090", timeout_s=30))
    assert long.round_deadline_s == 60.0


def test_eviction_shuts_the_pool_down(no_cached_providers, monkeypatch):
    monkeypatch.setattr(clients_module, "_CACHE_MAX", 2)
    a = client_for_settings(PrometheusSettings(address="http://a:9090"))
    a_token = client_for_settings(PrometheusSettings(address="http://a:9090", bearer_token="t"))
    client_for_settings(PrometheusSettings(address="http://b:9090"))  # evicts a
    assert not a.pool.closed  # a_token still uses it
    client_for_settings(PrometheusSettings(address="http://c:9090"))  # evicts a_token
    assert a.pool.closed and a_token.pool.closed
    assert isinstance(a.pool.refusal(), PoolSaturated)
    # The address is simply served by a new pool next time.
    again = client_for_settings(PrometheusSettings(address="http://a:9090"))
    assert not again.pool.closed and again.pool is not a.pool
