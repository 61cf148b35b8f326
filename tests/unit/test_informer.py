"""The informer's list-then-watch loop, against a scripted fake of the client's list call.

The e2e suite runs the informer against a real API server (every Rollout's Deployments
come through it; ``tests/e2e/test_informer.py`` forces a 410 and a relist there)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from segue.controller.informer import Informer, lines


class FakeResponse:
    def __init__(self, data: bytes = b"", chunks: list[bytes] | None = None) -> None:
        self.data = data
        self.chunks = chunks or []
        self.closed = False

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        yield from self.chunks

    def close(self) -> None:
        self.closed = True


class Refused(Exception):
    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def deployment(name: str, version: int, namespace: str = "shop") -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": str(version)},
        "spec": {"replicas": 1},
    }


def listing(version: int, *items: dict[str, Any]) -> FakeResponse:
    body = {"metadata": {"resourceVersion": str(version)}, "items": list(items)}
    return FakeResponse(data=json.dumps(body).encode())


def events(*evs: tuple[str, dict[str, Any]]) -> FakeResponse:
    text = b"".join(json.dumps({"type": t, "object": o}).encode() + b"\n" for t, o in evs)
    # Split the stream mid-line, as chunked transfer may.
    middle = len(text) // 2 + 3
    return FakeResponse(chunks=[text[:middle], text[middle:]])


class Script:
    """Answers each list call with the next response (or raises the next exception), and
    stops the informer once the script is done."""

    def __init__(self, *answers: FakeResponse | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []
        self.informer: Informer | None = None

    def __call__(self, **kwargs: Any) -> FakeResponse:
        self.calls.append(kwargs)
        if not self.answers:
            assert self.informer is not None
            self.informer.stop()
            raise ConnectionError("script done")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def failing_then_listed(*failures: Exception) -> Script:
    """``failures``, then a listing of one Deployment and a watch with nothing in it."""
    return Script(*failures, listing(10, deployment("a", 9)), events())


def run(script: Script) -> tuple[list[tuple[str | None, str]], int, Informer]:
    delivered: list[tuple[str | None, str]] = []
    listed: list[int] = []

    def deliver(type_: str | None, obj: dict[str, Any]) -> None:
        delivered.append((type_, obj["metadata"]["name"]))

    informer = Informer("deployments", script, deliver, lambda: listed.append(1))
    script.informer = informer
    informer.run(deliver, lambda: listed.append(1))  # on this thread, until the script ends
    return delivered, len(listed), informer


def test_lists_then_watches_from_the_listings_version() -> None:
    script = Script(
        listing(10, deployment("a", 9), deployment("b", 8)),
        events(
            ("MODIFIED", deployment("a", 11)),
            ("BOOKMARK", {"metadata": {"resourceVersion": "12"}}),
            ("ADDED", deployment("c", 13)),
            ("DELETED", deployment("b", 14)),
        ),
    )
    delivered, listed, informer = run(script)
    assert delivered == [
        (None, "a"),
        (None, "b"),
        ("MODIFIED", "a"),
        ("ADDED", "c"),
        ("DELETED", "b"),
    ]
    assert listed == 1
    assert script.calls[0].get("watch") is None
    assert script.calls[1]["watch"] is True
    assert script.calls[1]["resource_version"] == "10"
    assert script.calls[1]["allow_watch_bookmarks"] is True
    # The next watch (the script's end) starts after the last event, bookmarks included.
    assert script.calls[2]["resource_version"] == "14"
    assert informer.known == {("shop", "a"), ("shop", "c")}


def test_a_watch_ended_by_the_server_reopens_where_it_left_off() -> None:
    script = Script(
        listing(10, deployment("a", 9)),
        events(("MODIFIED", deployment("a", 11))),
        events(("MODIFIED", deployment("a", 15))),
    )
    delivered, listed, _ = run(script)
    assert delivered == [(None, "a"), ("MODIFIED", "a"), ("MODIFIED", "a")]
    assert [c.get("resource_version") for c in script.calls] == [None, "10", "11", "15"]
    assert listed == 1


def test_gone_lists_again_and_reports_what_vanished_meanwhile() -> None:
    script = Script(
        listing(10, deployment("a", 9), deployment("b", 8)),
        events(("ERROR", {"code": 410, "message": "too old resource version"})),
        listing(30, deployment("a", 25), deployment("c", 29)),
        events(),
    )
    delivered, listed, informer = run(script)
    assert delivered == [(None, "a"), (None, "b"), ("DELETED", "b"), (None, "a"), (None, "c")]
    assert listed == 1  # readiness comes once
    assert script.calls[3]["resource_version"] == "30"
    assert informer.known == {("shop", "a"), ("shop", "c")}


def test_a_410_answer_to_the_watch_also_lists_again() -> None:
    script = Script(
        listing(10, deployment("a", 9)),
        Refused(410, "Gone"),
        listing(20),
        events(),
    )
    delivered, _, _ = run(script)
    assert delivered == [(None, "a"), ("DELETED", "a")]


def test_failures_are_retried_and_reported_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("segue.controller.informer.BACKOFFS_S", (0.0,))
    script = failing_then_listed(
        Refused(503, "Service Unavailable"),
        ConnectionError("refused"),
    )
    with caplog.at_level(logging.INFO, logger="segue.controller.informer"):
        delivered, listed, _ = run(script)
    assert delivered == [(None, "a")]
    assert listed == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("broke (HTTP 503 Service Unavailable)" in m for m in messages) == 1
    assert not any("ConnectionError: refused" in m for m in messages)
    assert any("is back" in m for m in messages)


def test_an_outage_is_reported_to_the_operator_not_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("segue.controller.informer.BACKOFFS_S", (0.0,))
    outages: list[str] = []
    script = failing_then_listed(
        ConnectionError("refused"),
        ConnectionError("refused"),
    )

    def outage(error: BaseException) -> bool:
        outages.append(str(error))
        return isinstance(error, ConnectionError)

    informer = Informer("deployments", script, lambda t, o: None, lambda: None, outage=outage)
    script.informer = informer
    with caplog.at_level(logging.INFO, logger="segue.controller.informer"):
        informer.run(lambda t, o: None, lambda: None)
    # Both failures went to the operator's outage report (the script's own end is a
    # ConnectionError too); the informer said nothing, not even that it is back.
    assert outages[:2] == ["refused", "refused"]
    assert caplog.records == []


def test_a_429_is_waited_out_without_a_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CRD installed a moment before the operator starts answers 429 until its storage
    is ready: nothing for a person to act on."""
    monkeypatch.setattr("segue.controller.informer.BACKOFFS_S", (0.0,))
    script = failing_then_listed(
        Refused(429, "Too Many Requests"),
        Refused(429, "Too Many Requests"),
    )
    with caplog.at_level(logging.INFO, logger="segue.controller.informer"):
        delivered, listed, _ = run(script)
    assert delivered == [(None, "a")]
    assert listed == 1
    assert len(script.calls) == 5  # two refused, the listing, the watch, the script's end
    assert caplog.records == []


def test_a_refusal_says_what_to_grant(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("segue.controller.informer.BACKOFFS_S", (0.0,))
    script = Script(Refused(403, "Forbidden"))
    with caplog.at_level(logging.INFO, logger="segue.controller.informer"):
        _, listed, _ = run(script)
    assert listed == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "HTTP 403 Forbidden" in errors[0]
    assert "list and watch" in errors[0]


def test_stop_wakes_the_read_without_closing_from_another_thread() -> None:
    # Closing a response while another thread reads it blocks until the read returns:
    # stop() shuts the socket down instead, and the reading thread closes the response.
    class Sock:
        how: int | None = None

        def shutdown(self, how: int) -> None:
            self.how = how

    class Connection:
        sock = Sock()

    response = FakeResponse()
    response.connection = Connection()  # type: ignore[attr-defined]
    informer = Informer("deployments", lambda **_: response, lambda t, o: None, lambda: None)
    informer._open(watch=True)
    informer.stop()
    assert Connection.sock.how == socket.SHUT_RDWR
    assert not response.closed
    assert informer.stopping


def test_lines_are_whole_however_the_chunks_fall() -> None:
    response = FakeResponse(chunks=[b'{"a"', b': 1}\n{"b": 2}\n\n{"c"', b": 3}"])
    assert [json.loads(line) for line in lines(response)] == [{"a": 1}, {"b": 2}, {"c": 3}]
