"""The Kubernetes lanes against a scripted HTTP server on loopback: an unreachable or
unavailable API server is one outage (logged once, probed, its end announced), every
request carries a timeout, and kopf's retry lines fold into the same outage."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from segue.controller import kube as kube_module
from segue.controller.kube import ApiUnavailable, KopfRetries, Kube


class Script:
    def __init__(self) -> None:
        self.ready = 503
        self.api = 503
        self.paths: list[str] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            script.paths.append(self.path)
            code = script.ready if self.path.startswith("/readyz") else script.api
            body = b'{"kind":"Status","code":%d}' % code
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _answer
        do_PATCH = _answer

        def log_message(self, *args: Any) -> None:  # quiet test output
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def make_kube(host: str) -> Kube:
    configuration = client.Configuration()
    configuration.host = host
    return Kube(configuration, deadline_s=5.0)


def read_version(api: client.ApiClient) -> Any:
    return client.VersionApi(api).get_code()


def read_object(api: client.ApiClient) -> Any:
    return client.CustomObjectsApi(api).get_cluster_custom_object("g", "v1", "things", "one")


def test_an_unavailable_server_is_one_outage_until_readyz_answers(server, caplog, monkeypatch):
    host, script = server
    monkeypatch.setattr(kube_module, "PROBE_INTERVAL_S", 0.05)
    caplog.set_level(logging.INFO, logger="segue.controller.kube")

    async def scenario() -> None:
        kube = make_kube(host)
        woken: list[bool] = []
        kube.connectivity.listeners.append(lambda: woken.append(True))
        for _ in range(3):
            with pytest.raises(ApiUnavailable):
                await kube.call(read_version)
        assert kube.connectivity.down
        await asyncio.sleep(0.3)
        assert not woken  # /readyz still says no
        script.ready = 200
        for _ in range(100):
            if woken:
                break
            await asyncio.sleep(0.02)
        assert woken == [True]
        assert not kube.connectivity.down
        kube.close()

    asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "unreachable" in m]) == 1, lines
    assert len([m for m in lines if "reachable again" in m]) == 1, lines
    assert any(p.startswith("/readyz") for p in script.paths)


def test_a_refused_connection_is_an_outage_not_an_error():
    async def scenario() -> None:
        kube = make_kube("http://127.0.0.1:9")  # discard port: nothing listens
        with pytest.raises(ApiUnavailable):
            await kube.call(read_version)
        assert kube.connectivity.down
        kube.close()

    asyncio.run(scenario())


def test_every_request_gets_a_timeout(server, monkeypatch):
    host, script = server
    script.api = 200
    seen: list[Any] = []
    kube = make_kube(host)
    real: Any = kube.normal.api.rest_client.request

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("_request_timeout"))
        return real(*args, **kwargs)

    monkeypatch.setattr(kube.normal.api.rest_client, "request", spy)
    asyncio.run(kube.call(read_object))
    kube.close()
    assert seen == [(kube_module.CONNECT_TIMEOUT_S, kube_module.READ_TIMEOUT_S)]


def test_writes_in_an_urgent_block_use_the_urgent_lane():
    kube = make_kube("http://127.0.0.1:9")
    assert kube.lane() is kube.normal
    with kube_module.urgent():
        assert kube.lane() is kube.urgent
    assert kube.lane() is kube.normal
    kube.close()


def test_kopf_retry_lines_become_the_outage_line():
    kube = make_kube("http://127.0.0.1:9")
    retries = KopfRetries(kube)
    retry = logging.LogRecord(
        "kopf._cogs.clients.watching", logging.ERROR, __file__, 1,
        "Request attempt #3/9 failed; will retry: GET https://x/apis -> ConnectionError()",
        None, None,
    )  # fmt: skip
    other = logging.LogRecord(
        "kopf.objects", logging.ERROR, __file__, 1, "Handler failed", None, None
    )
    assert retries.filter(retry) is False
    assert kube.connectivity.down
    assert retries.filter(other) is True
    kube.close()


def test_throttling_is_not_an_outage_and_forbidden_is_always_shown():
    kube = make_kube("http://127.0.0.1:9")
    retries = KopfRetries(kube)

    def line(error: str) -> logging.LogRecord:
        text = f"Request attempt #1/9 failed; will retry: GET https://x/apis -> {error}()"
        return logging.LogRecord("kopf", logging.ERROR, __file__, 1, text, None, None)

    throttled = line("APITooManyRequestsError")
    assert retries.filter(throttled) is False  # at INFO: a debug line, not shown
    assert throttled.levelno == logging.DEBUG
    assert retries.filter(line("APIForbiddenError")) is True
    assert not kube.connectivity.down
    kube.close()
