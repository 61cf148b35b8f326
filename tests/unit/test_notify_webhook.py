"""The dispatcher against a real HTTP receiver on 127.0.0.1: delivery, retries, refusals,
hanging receivers and a full queue; and its isolation: no default executor, no proxy from
the environment, DNS lookups bounded on threads of their own."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from segue.api import RolloutStatus
from segue.engine import PhaseChanged
from segue.notify import (
    Dispatcher,
    Notification,
    NotificationHook,
    RetryPolicy,
    WebhookTarget,
    json_payload,
    post,
    slack_payload,
)
from segue.notify.destinations import Destinations
from segue.notify.webhook import PoolResolver, open_session
from tests.unit.conftest import NoDefaultExecutor
from tests.unit.waiting import until

T = TypeVar("T")
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FAST = RetryPolicy(timeout=2.0, retries=3, backoff=0.01)
# The receivers here listen on loopback, which the operator refuses unless allowed.
LOOPBACK = Destinations(allow_internal=True)


def note(step: int = 1, kind: str = "PhaseChanged") -> Notification:
    return Notification(
        kind=kind,  # type: ignore[arg-type]
        namespace="shop",
        rollout="checkout",
        phase="Progressing",
        step=step,
        weight=10 * step,
        message=f"step {step}",
        time=AT,
    )


@dataclass
class Hit:
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class Receiver:
    """Answers each path with its scripted statuses in turn (the last one repeats; 200 when
    none); paths under /hang never answer until the receiver closes."""

    script: dict[str, list[int]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[Any]:
        return [h.body for h in self.hits if h.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(Hit(request.path, await request.json(), dict(request.headers)))
        if request.path.startswith("/hang"):
            await self.release.wait()
            return web.Response(status=200)
        statuses = self.script.get(request.path, [200])
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return web.Response(status=status, text="nope" if status >= 400 else "ok")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self.runner is not None
        await self.runner.cleanup()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=30))


class Counts:
    """Stands in for OperatorMetrics as the dispatcher's observer."""

    def __init__(self) -> None:
        self.dropped = 0
        self.failed = 0

    def notification_dropped(self) -> None:
        self.dropped += 1

    def notification_failed(self) -> None:
        self.failed += 1


def test_delivers_slack_and_json_bodies() -> None:
    async def body() -> None:
        async with Receiver() as rx:
            d = Dispatcher(destinations=LOOPBACK, policy=FAST)
            await d.start()
            n = note()
            queued = d.publish(
                [WebhookTarget(rx.url("/slack"), "slack"), WebhookTarget(rx.url("/json"), "json")],
                n,
            )
            assert queued == 2
            await d.stop(deadline=5)
            # What arrives is exactly the payload, through a JSON round trip.
            assert rx.bodies("/slack") == [json.loads(json.dumps(slack_payload(n)))]
            assert rx.bodies("/json") == [json.loads(json.dumps(json_payload(n)))]
            hit = rx.hits[0]
            assert hit.headers["Content-Type"].startswith("application/json")
            assert hit.headers["User-Agent"].startswith("segue-notify/")
            assert (d.stats.delivered, d.stats.failed, d.stats.dropped) == (2, 0, 0)

    run(body)


def test_retries_a_500_then_succeeds() -> None:
    async def body() -> None:
        async with Receiver(script={"/flaky": [500, 503, 200]}) as rx:
            counts = Counts()
            async with Dispatcher(destinations=LOOPBACK, policy=FAST, observer=counts) as d:
                d.publish([WebhookTarget(rx.url("/flaky"))], note())
                await until(lambda: d.stats.delivered == 1)
            assert len(rx.bodies("/flaky")) == 3
            assert (d.stats.failed, counts.failed) == (0, 0)

    run(body)


def test_retries_a_429_and_gives_up_after_the_retries() -> None:
    async def body() -> None:
        async with Receiver(script={"/busy": [429, 200], "/down": [502]}) as rx:
            counts = Counts()
            async with Dispatcher(destinations=LOOPBACK, policy=FAST, observer=counts) as d:
                d.publish([WebhookTarget(rx.url("/busy")), WebhookTarget(rx.url("/down"))], note())
                await until(lambda: d.stats.delivered + d.stats.failed == 2)
            assert len(rx.bodies("/busy")) == 2
            assert len(rx.bodies("/down")) == 1 + FAST.retries
            assert (d.stats.delivered, d.stats.failed, counts.failed) == (1, 1, 1)

    run(body)


def test_a_404_is_not_retried() -> None:
    async def body() -> None:
        async with Receiver(script={"/gone": [404, 200]}) as rx:
            counts = Counts()
            async with Dispatcher(destinations=LOOPBACK, policy=FAST, observer=counts) as d:
                d.publish([WebhookTarget(rx.url("/gone"))], note())
                await until(lambda: d.stats.failed == 1)
                await asyncio.sleep(0.1)  # room for a retry that must not come
            assert len(rx.bodies("/gone")) == 1
            assert counts.failed == 1 and d.stats.delivered == 0

    run(body)


def test_connection_refused_is_retried_then_fails() -> None:
    async def body() -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        target = WebhookTarget(f"http://127.0.0.1:{port}/hook")
        async with aiohttp.ClientSession() as session:
            policy = RetryPolicy(retries=2, backoff=0.01)
            result = await post(session, target, {"x": 1}, policy, LOOPBACK)
        assert (result.outcome, result.attempts, result.status) == ("failed", 3, None)
        assert result.error is not None and "127.0.0.1" not in result.error

    run(body)


def test_a_hanging_receiver_never_delays_publish() -> None:
    async def body() -> None:
        async with Receiver() as rx:
            d = Dispatcher(destinations=LOOPBACK, policy=RetryPolicy(timeout=0.5, retries=0))
            await d.start()
            hang, ok = WebhookTarget(rx.url("/hang")), WebhookTarget(rx.url("/ok"))
            d.publish([hang], note(1))
            await until(lambda: len(rx.bodies("/hang")) == 1)
            # The worker is now stuck on the hanging receiver: publishing stays instant and
            # the event loop stays responsive.
            started = time.perf_counter()
            for step in range(2, 52):
                d.publish([hang, ok], note(step))
            took = time.perf_counter() - started
            assert took < 0.05, f"publish took {took:.3f}s"
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            assert time.perf_counter() - started < 0.2
            # The other receiver has a lane of its own: it gets its messages while the
            # hanging one still holds its worker (before the 0.5 s timeout frees it).
            await until(lambda: len(rx.bodies("/ok")) == 50, within=0.4)
            assert [b["step"] for b in rx.bodies("/ok")] == list(range(2, 52))
            await until(lambda: d.stats.failed >= 1, within=5)
            await d.stop(deadline=0.1)
            assert d.stats.delivered + d.stats.failed + d.stats.dropped == 101

    run(body)


def test_stop_keeps_to_its_deadline_with_a_hanging_receiver() -> None:
    async def body() -> None:
        async with Receiver() as rx:
            counts = Counts()
            d = Dispatcher(
                destinations=LOOPBACK, policy=RetryPolicy(timeout=30, retries=0), observer=counts
            )
            await d.start()
            d.publish([WebhookTarget(rx.url("/hang"))], note(1))
            d.publish([WebhookTarget(rx.url("/hang"))], note(2))
            await until(lambda: len(rx.hits) == 1)
            started = time.perf_counter()
            await d.stop(deadline=0.2)
            assert time.perf_counter() - started < 2
            # The one in flight and the one queued are both lost, and counted.
            assert d.stats.dropped == counts.dropped == 2
            assert d.publish([WebhookTarget(rx.url("/ok"))], note(3)) == 0
            assert d.stats.dropped == 3

    run(body)


def test_a_full_queue_drops_the_oldest() -> None:
    async def body() -> None:
        async with Receiver() as rx:
            counts = Counts()
            d = Dispatcher(max_queue=2, destinations=LOOPBACK, policy=FAST, observer=counts)
            target = WebhookTarget(rx.url("/json"))
            for step in (1, 2, 3):
                d.publish([target], note(step))  # not started: the queue only fills
            assert (d.pending, d.stats.dropped, counts.dropped) == (2, 1, 1)
            await d.start()
            await d.stop(deadline=5)
            assert [b["step"] for b in rx.bodies("/json")] == [2, 3]
            assert d.stats.delivered == 2

    run(body)


def test_targets_get_only_the_kinds_they_want() -> None:
    async def body() -> None:
        async with Receiver() as rx:
            rollbacks = WebhookTarget.of(rx.url("/rb"), "json", ["RollbackStarted"])
            everything = WebhookTarget(rx.url("/all"), "json")
            async with Dispatcher(destinations=LOOPBACK, policy=FAST) as d:
                assert d.publish([rollbacks, everything], note(1, "PhaseChanged")) == 1
                assert d.publish([rollbacks, everything], note(2, "RollbackStarted")) == 2
                await until(lambda: d.stats.delivered == 3)
            assert [b["event"] for b in rx.bodies("/rb")] == ["RollbackStarted"]
            assert [b["event"] for b in rx.bodies("/all")] == ["PhaseChanged", "RollbackStarted"]

    run(body)


def test_the_hook_publishes_status_changes_to_the_rollouts_targets() -> None:
    async def body() -> None:
        async with Receiver() as rx:
            asked: list[tuple[str, str, object]] = []

            def targets_for(namespace: str, name: str, obj: object) -> list[WebhookTarget]:
                asked.append((namespace, name, obj))
                return [WebhookTarget(rx.url("/json"))]

            async with Dispatcher(destinations=LOOPBACK, policy=FAST) as d:
                hook = NotificationHook(d, targets_for, clock=lambda: AT)
                old = RolloutStatus(phase="Progressing", step=1, weight=10)
                new = RolloutStatus(phase="Succeeded", step=6, weight=100)
                hook.decided("shop", "checkout", old, old, {"kind": "Rollout"})
                assert asked == []  # nothing changed: the Secrets are not even read
                done = PhaseChanged("Progressing", "Succeeded", None, "all done", "segue", None, AT)
                hook.decided("shop", "checkout", old, new, {"kind": "Rollout"}, [done])
                await until(lambda: d.stats.delivered == 1)
            assert asked == [("shop", "checkout", {"kind": "Rollout"})]
            (sent,) = rx.bodies("/json")
            assert (sent["event"], sent["weight"], sent["time"]) == (
                "Succeeded",
                100,
                "2026-03-01T12:00:00Z",
            )

    run(body)


# --- isolation: no default executor, no proxy, DNS on threads of its own --------------------


def test_deliveries_never_use_the_default_executor() -> None:
    default = NoDefaultExecutor()

    async def body() -> None:
        asyncio.get_running_loop().set_default_executor(default)
        async with Receiver() as rx:
            # A host name, so the DNS lookup runs too.
            target = WebhookTarget(f"http://localhost:{rx.port}/json")
            async with Dispatcher(destinations=LOOPBACK, policy=FAST) as d:
                d.publish([target], note())
                await until(lambda: d.stats.delivered == 1)
            assert len(rx.bodies("/json")) == 1

    try:
        run(body)
    finally:
        default.shutdown()
    assert default.used == []


def test_proxy_settings_from_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a proxy nobody listens on: using it would fail
        s.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    async def body() -> None:
        async with Receiver() as rx:
            async with Dispatcher(destinations=LOOPBACK, policy=FAST) as d:
                d.publish([WebhookTarget(rx.url("/json"))], note())
                await until(lambda: d.stats.delivered + d.stats.failed == 1)
                assert d.stats.delivered == 1
            assert len(rx.bodies("/json")) == 1

    run(body)


def test_a_stuck_dns_lookup_is_bounded_and_does_not_pile_up() -> None:
    release = threading.Event()
    threads: list[str] = []

    def stuck(host: str, *args: Any) -> list[Any]:
        threads.append(threading.current_thread().name)
        release.wait(30)
        return []

    async def body() -> None:
        resolver = PoolResolver(timeout=0.2, max_in_flight=1, lookup=stuck)
        try:
            with pytest.raises(OSError, match=r"DNS lookup of hooks.example took over 0.2s"):
                await resolver.resolve("hooks.example", 443)
            # The lookup still holds its thread: the next one is refused without waiting.
            assert resolver.in_flight == 1
            with pytest.raises(OSError, match="refused"):
                await resolver.resolve("hooks.example", 443)
            # A delivery through it fails as a connection error, within its retries.
            async with open_session(resolver) as session:
                result = await post(
                    session,
                    WebhookTarget("https://hooks.example/x"),
                    {"x": 1},
                    RetryPolicy(timeout=2, retries=1, backoff=0.01),
                )
            assert (result.outcome, result.attempts, result.status) == ("failed", 2, None)
            assert result.error is not None and "hooks.example" not in result.error
            release.set()
            await until(lambda: resolver.in_flight == 0)
        finally:
            release.set()
            await resolver.close()

    run(body)
    assert threads and all(t.startswith("segue-notify-dns") for t in threads)


def test_the_resolver_returns_usable_addresses() -> None:
    async def body() -> None:
        resolver = PoolResolver(destinations=LOOPBACK)
        try:
            hosts = await resolver.resolve("localhost", 8080, socket.AF_INET)
        finally:
            await resolver.close()
        assert hosts and all(h["hostname"] == "localhost" and h["port"] == 8080 for h in hosts)
        assert "127.0.0.1" in {h["host"] for h in hosts}

    run(body)


# --- refused destinations: checked by name first, and by address at connect time ----------


def resolving_to(address: str, names: dict[str, str] | None = None) -> Callable[..., Any]:
    """A ``getaddrinfo`` stand-in: every name (or those in ``names``) resolves to
    ``address``, as a DNS server the URL's author controls would answer."""

    def lookup(host: str, port: int, *args: Any) -> list[Any]:
        ip = (names or {}).get(host, address)
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sockaddr = (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)
        return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

    return lookup


class Refusals:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, n: Notification, target: WebhookTarget, refusal: Any) -> None:
        self.seen.append((n.rollout, target.source, str(refusal)))


def test_the_resolver_drops_refused_addresses() -> None:
    async def body() -> None:
        both = PoolResolver(lookup=_two_addresses)
        only_loopback = PoolResolver(lookup=resolving_to("127.0.0.1"))
        allowed = PoolResolver(lookup=resolving_to("127.0.0.1"), destinations=LOOPBACK)
        named = PoolResolver(
            lookup=resolving_to("169.254.169.254"),
            destinations=Destinations.of(allow_hosts=["meta.example.com"]),
        )
        exempt = PoolResolver(lookup=resolving_to("10.0.0.3"), exempt=frozenset({"proxy.infra"}))
        try:
            hosts = await both.resolve("hooks.example.com", 443)
            assert [h["host"] for h in hosts] == ["93.184.215.14"]
            with pytest.raises(OSError, match=r"resolves to 127\.0\.0\.1, a loopback address"):
                await only_loopback.resolve("hooks.example.com", 443)
            assert [h["host"] for h in await allowed.resolve("hooks.example.com", 443)] == [
                "127.0.0.1"
            ]
            assert [h["host"] for h in await named.resolve("meta.example.com", 80)] == [
                "169.254.169.254"
            ]
            with pytest.raises(OSError, match="link-local"):
                await named.resolve("other.example.com", 80)
            assert [h["host"] for h in await exempt.resolve("proxy.infra", 3128)] == ["10.0.0.3"]
            with pytest.raises(OSError, match="private"):
                await exempt.resolve("hooks.example.com", 443)
        finally:
            for r in (both, only_loopback, allowed, named, exempt):
                await r.close()

    run(body)


def _two_addresses(host: str, port: int, *args: Any) -> list[Any]:
    return [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
    ]


def test_a_name_that_resolves_to_loopback_at_connect_time_gets_nothing() -> None:
    """The name passes the check by name; the address it resolves to when the session
    connects is what counts. Allowed, the same setup delivers, so the receiver is real."""

    async def deliver(destinations: Destinations) -> tuple[Any, int]:
        async with Receiver() as rx:
            resolver = PoolResolver(lookup=resolving_to("127.0.0.1"), destinations=destinations)
            target = WebhookTarget(f"http://hooks.example.com:{rx.port}/json")
            try:
                async with open_session(resolver) as session:
                    result = await post(session, target, {"x": 1}, FAST, destinations)
            finally:
                await resolver.close()
            return result, len(rx.hits)

    async def body() -> None:
        refused, hits = await deliver(Destinations())
        assert (refused.outcome, refused.attempts, hits) == ("refused", 1, 0)
        assert refused.error == "hooks.example.com resolves to 127.0.0.1, a loopback address"
        delivered, hits = await deliver(LOOPBACK)
        assert (delivered.outcome, hits) == ("delivered", 1)

    run(body)


def test_the_dispatcher_sends_nothing_to_refused_targets_and_reports_them() -> None:
    async def body() -> None:
        refusals, counts = Refusals(), Counts()
        async with Receiver() as rx:
            literal = WebhookTarget(rx.url("/literal"), source="spec.notifications[0].secretRef")
            ipv6 = WebhookTarget(
                f"http://[::ffff:127.0.0.1]:{rx.port}/v6", source="spec.notifications[1]"
            )
            metadata = WebhookTarget("http://169.254.169.254/latest/meta-data/", source="m")
            service = WebhookTarget("http://alerts.monitoring.svc:8080/", source="svc")
            async with Dispatcher(policy=FAST, observer=counts, on_refused=refusals) as d:
                for step in (1, 2):
                    d.publish([literal, ipv6, metadata, service], note(step))
                await until(lambda: d.stats.refused == 8)
                assert d.stats.delivered == 0
            assert rx.hits == []
        assert counts.failed == 8
        assert refusals.seen[0][:2] == ("checkout", "spec.notifications[0].secretRef")
        reasons = {r for _, _, r in refusals.seen}
        assert any(r.startswith("127.0.0.1 is a loopback address") for r in reasons)
        assert any(r.startswith("::ffff:7f00:1 is a loopback address") for r in reasons)
        assert any(r.startswith("169.254.169.254 is a link-local address") for r in reasons)
        assert any(r.startswith("alerts.monitoring.svc is a cluster-internal") for r in reasons)

    run(body)


def test_a_redirect_is_not_followed() -> None:
    async def body() -> None:
        async with Receiver() as rx:
            rx.script["/moved"] = [307]
            async with Dispatcher(destinations=LOOPBACK, policy=FAST) as d:
                d.publish([WebhookTarget(rx.url("/moved"))], note())
                await until(lambda: d.stats.failed == 1)
            assert [h.path for h in rx.hits] == ["/moved"]

    run(body)


def test_a_configured_proxy_carries_every_delivery() -> None:
    """The proxy (here the receiver, on loopback, which the rules would refuse as a
    destination) is the operator's own: its name is not judged, and the target's host is
    never looked up here but by the proxy."""

    async def body() -> None:
        async with Receiver() as proxy:
            target = WebhookTarget("http://hooks.example.com/json")
            async with Dispatcher(policy=FAST, proxy=f"http://localhost:{proxy.port}") as d:
                d.publish([target], note())
                await until(lambda: d.stats.delivered + d.stats.failed == 1)
                assert d.stats.delivered == 1
            assert [(h.path, h.headers.get("Host")) for h in proxy.hits] == [
                ("/json", "hooks.example.com")
            ]
            # Through the proxy, a refused host is still refused by name.
            async with Dispatcher(policy=FAST, proxy=f"http://localhost:{proxy.port}") as d:
                d.publish([WebhookTarget("http://10.0.0.1/x")], note())
                await until(lambda: d.stats.refused == 1)
            assert len(proxy.hits) == 1

    run(body)
