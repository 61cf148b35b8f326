"""Leader election on a Lease (segue.controller.leader): the timing decisions as pure
functions with an injected clock, and the elector against an in-memory Lease store."""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from segue.controller import leader
from segue.controller.leader import (
    Acquire,
    Conflict,
    Elector,
    LeaseGone,
    LeaseRecord,
    Seen,
    Timing,
    Wait,
    claim_spec,
    judge,
    lease_namespace,
    lease_object,
    micro_time,
    observe,
    release_spec,
    renewal_lost,
    standing_by_message,
)
from segue.controller.main import parse_args

# Every test here finishes in seconds; a hang fails fast instead of stalling the suite.
pytestmark = pytest.mark.timeout(60)

T = Timing()
NOW = datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)


def record(holder: str = "a-1", rv: str = "1", **kw: Any) -> LeaseRecord:
    base: dict[str, Any] = {
        "holder": holder,
        "duration": 10.0,
        "acquire_time": NOW,
        "renew_time": NOW,
        "transitions": 0,
        "resource_version": rv,
    }
    base.update(kw)
    return LeaseRecord(**base)


# --- timing ---------------------------------------------------------------------------------


def test_defaults_fail_over_within_15s_and_stop_the_holder_before_anyone_can_take_over():
    assert (T.lease_duration, T.retry_period, T.renew_deadline) == (10.0, 2.0, 7.0)
    assert T.worst_case_failover() < 15
    # The holder gives up after renew_deadline and is gone (hard exit) by stop_by, before
    # the earliest takeover at renewed_at + lease_duration.
    assert 0 + T.renew_deadline < T.stop_by(0) < 0 + T.lease_duration


@pytest.mark.parametrize(
    "kw",
    [
        {"retry_period": 0},
        {"renew_deadline": 1.0},  # not above the retry period
        {"renew_deadline": 10.0},  # not below the lease duration
        {"request_timeout": 0},
        {"request_timeout": 8.0},
    ],
)
def test_inconsistent_timings_are_refused(kw):
    with pytest.raises(ValueError):
        Timing(**kw)


def test_no_lease_or_a_released_one_is_claimed_at_once():
    assert judge("me-1", None, 0.0, T) == Acquire("absent")
    assert judge("me-1", Seen(record(holder=""), 0.0), 0.0, T) == Acquire("released")


def test_own_claim_is_taken_back():
    assert judge("me-1", Seen(record(holder="me-1"), 0.0), 0.1, T) == Acquire("ours")


def test_a_live_lease_is_waited_on_until_it_expires_by_the_candidates_own_clock():
    seen = Seen(record(holder="other-2"), changed_at=100.0)
    # Renewals are looked for every retry period...
    assert judge("me-1", seen, 100.0, T) == Wait("other-2", 102.0)
    # ...and near expiry the next look is at the expiry itself, not a retry period later.
    assert judge("me-1", seen, 109.0, T) == Wait("other-2", 110.0)
    assert judge("me-1", seen, 109.999, T) == Wait("other-2", 110.0)
    assert judge("me-1", seen, 110.0, T) == Acquire("expired")


def test_expiry_uses_the_holders_duration_and_ignores_its_wall_clock():
    # The holder's clock says it renewed an hour ago; only what this candidate saw counts.
    stale = record(holder="other-2", duration=30.0, renew_time=NOW - timedelta(hours=1))
    seen = Seen(stale, changed_at=0.0)
    assert isinstance(judge("me-1", seen, 29.9, T), Wait)
    assert judge("me-1", seen, 30.0, T) == Acquire("expired")
    for duration in (None, 0.0):
        assert judge("me-1", Seen(record(duration=duration), 0.0), 10.0, T) == Acquire("expired")
        assert isinstance(judge("me-1", Seen(record(duration=duration), 0.0), 9.9, T), Wait)


def test_a_renewal_restarts_the_wait_and_a_label_edit_does_not():
    first = observe(None, record(rv="1"), now=5.0)
    assert first.changed_at == 5.0
    relabelled = observe(first, record(rv="2"), now=7.0)
    assert relabelled.changed_at == 5.0 and relabelled.record.resource_version == "2"
    renewed = observe(relabelled, record(rv="3", renew_time=NOW + timedelta(seconds=2)), 9.0)
    assert renewed.changed_at == 9.0
    new_holder = observe(
        renewed, record(holder="b-2", rv="4", renew_time=renewed.record.renew_time), 9.5
    )
    assert new_holder.changed_at == 9.5


def test_holder_gives_up_at_the_renew_deadline():
    assert not renewal_lost(renewed_at=100.0, now=106.99, timing=T)
    assert renewal_lost(renewed_at=100.0, now=107.0, timing=T)


def simulate(kill_at: float, phase: float, timing: Timing = T) -> tuple[float, bool]:
    """The holder renews every retry period from t=0 (a write lands at once) and dies at
    ``kill_at``; a standby starts looking at ``phase`` and follows judge()'s Wait.until.
    Returns when the standby claims, and whether it ever wanted to while the holder lived."""
    renewals = [i * timing.retry_period for i in range(int(kill_at / timing.retry_period) + 1)]
    seen: Seen | None = None
    now = phase
    early = False
    while True:
        last = max(t for t in renewals if t <= now)
        rec = record(holder="old-1", rv=str(last), renew_time=NOW + timedelta(seconds=last))
        seen = observe(seen, rec, now)
        decision = judge("new-2", seen, now, timing)
        if isinstance(decision, Acquire):
            return now, early or now < kill_at
        now = decision.until


@pytest.mark.parametrize("kill_at", [2.0, 3.9, 10.0, 31.7])
@pytest.mark.parametrize("phase", [0.0, 0.3, 1.0, 1.99])
def test_a_standby_takes_over_within_the_bound_and_never_while_the_holder_renews(kill_at, phase):
    claimed, early = simulate(kill_at, phase)
    assert not early
    # From the death: at most one retry period to see the last renewal, then one lease
    # duration (the claim request itself adds at most a request timeout).
    assert claimed - kill_at <= T.retry_period + T.lease_duration
    assert claimed - kill_at + T.request_timeout <= T.worst_case_failover() < 15


# --- what is written --------------------------------------------------------------------------


def test_micro_time_always_has_six_fractional_digits_in_utc():
    assert micro_time(datetime(2026, 3, 1, 12, 0, tzinfo=UTC)) == "2026-03-01T12:00:00.000000Z"
    cet = datetime(2026, 3, 1, 13, 0, 0, 1, tzinfo=UTC).astimezone()
    assert micro_time(cet) == "2026-03-01T13:00:00.000001Z"


def test_claiming_counts_a_transition_and_renewing_keeps_the_acquire_time():
    taken = claim_spec("me-1", record(holder="other-2", transitions=4), NOW, T)
    assert taken == {
        "holderIdentity": "me-1",
        "leaseDurationSeconds": 10,
        "acquireTime": "2026-03-01T12:00:00.500000Z",
        "renewTime": "2026-03-01T12:00:00.500000Z",
        "leaseTransitions": 5,
    }
    later = NOW + timedelta(seconds=2)
    acquired = NOW - timedelta(minutes=5)
    renewed = claim_spec(
        "me-1", record(holder="me-1", transitions=5, acquire_time=acquired), later, T
    )
    assert renewed["leaseTransitions"] == 5
    assert renewed["acquireTime"] == micro_time(acquired)
    assert renewed["renewTime"] == micro_time(later)
    assert claim_spec("me-1", None, NOW, T)["leaseTransitions"] == 0


def test_releasing_leaves_no_holder():
    spec = release_spec(record(holder="me-1", transitions=3), NOW)
    assert "holderIdentity" not in spec
    assert spec["leaseDurationSeconds"] == 1 and spec["leaseTransitions"] == 3
    assert judge("b-2", Seen(LeaseRecord.from_object({"spec": spec}), 0.0), 0.0, T) == Acquire(
        "released"
    )


def test_writes_are_guarded_by_the_resource_version_and_keep_labels():
    base = {
        "metadata": {
            "name": "segue-operator",
            "namespace": "ops",
            "resourceVersion": "42",
            "labels": {"team": "x"},
            "uid": "u",
            "managedFields": [{}],
        },
        "spec": {"holderIdentity": "old"},
    }
    body = lease_object(base, "ops", "segue-operator", {"holderIdentity": "me-1"})
    assert body == {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "segue-operator",
            "namespace": "ops",
            "resourceVersion": "42",
            "labels": {"team": "x"},
        },
        "spec": {"holderIdentity": "me-1"},
    }
    assert "resourceVersion" not in lease_object(None, "ops", "l", {})["metadata"]


def test_lease_record_reads_what_the_api_server_returns():
    obj = {
        "metadata": {"resourceVersion": "7"},
        "spec": {
            "holderIdentity": "host-123",
            "leaseDurationSeconds": 10,
            "acquireTime": "2026-03-01T12:00:00.000000Z",
            "renewTime": "2026-03-01T12:00:01.250000+00:00",
            "leaseTransitions": 2,
        },
    }
    r = LeaseRecord.from_object(obj)
    assert r == LeaseRecord(
        "host-123",
        10.0,
        datetime(2026, 3, 1, 12, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 0, 1, 250000, tzinfo=UTC),
        2,
        "7",
    )
    empty = LeaseRecord.from_object({"metadata": {}, "spec": {"renewTime": "garbage"}})
    assert empty == LeaseRecord("", None, None, None, 0, "")


def test_standing_by_says_who_holds_the_lease_and_how_recently_it_renewed():
    r = record(holder="host-123", renew_time=NOW)
    message = standing_by_message("default/segue-operator", r, NOW + timedelta(seconds=1.2))
    assert message == (
        "standing by: Lease default/segue-operator is held by host-123 (renewed 1.2s ago)"
    )
    assert "(never renewed)" in standing_by_message("d/l", record(renew_time=None), NOW)


def test_lease_namespace_flag_then_pod_namespace_then_first_watched_then_default():
    assert lease_namespace("ops", {"POD_NAMESPACE": "pod"}, ["shop"]) == "ops"
    assert lease_namespace(None, {"POD_NAMESPACE": "pod"}, ["shop"]) == "pod"
    assert lease_namespace(None, {}, ["shop", "payments"]) == "shop"
    assert lease_namespace(None, {"POD_NAMESPACE": ""}, []) == "default"


def test_flags():
    args = parse_args([])
    assert args.leader_election is True
    assert args.leader_election_name == "segue-operator"
    assert args.leader_election_namespace is None
    args = parse_args(
        [
            "--no-leader-election",
            "--leader-election-namespace",
            "ops",
            "--leader-election-name",
            "x",
        ]
    )
    assert (args.leader_election, args.leader_election_namespace) == (False, "ops")
    assert args.leader_election_name == "x"


def test_identity_is_host_and_pid():
    assert leader.default_identity().startswith(socket.gethostname() + "-")


# --- the elector against an in-memory Lease ------------------------------------------------


class MemoryStore:
    """One Lease in memory with the API server's rules: create fails if it exists, replace
    fails on a stale resourceVersion (409) or a missing object (404)."""

    namespace = "ops"
    name = "segue-operator"

    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None
        self.lock = threading.Lock()
        self.rv = 0
        self.down = False  # the API server does not answer

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("connection refused")

    def _stored(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.obj = obj
        return copy.deepcopy(obj)

    def get(self) -> dict[str, Any] | None:
        with self.lock:
            self._check()
            return copy.deepcopy(self.obj)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._check()
            if self.obj is not None:
                raise Conflict("AlreadyExists")
            return self._stored(body)

    def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._check()
            if self.obj is None:
                raise LeaseGone()
            if body["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]:
                raise Conflict("Conflict")
            return self._stored(body)

    def holder(self) -> str:
        with self.lock:
            return LeaseRecord.from_object(self.obj).holder if self.obj else ""

    def steal(self, holder: str) -> None:
        with self.lock:
            assert self.obj is not None
            body = copy.deepcopy(self.obj)
            body["spec"]["holderIdentity"] = holder
            self._stored(body)


FAST = Timing(lease_duration=1.0, renew_deadline=0.7, retry_period=0.1, request_timeout=0.1)


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_one_leads_the_other_stands_by_saying_so_once_and_takes_over_on_release(caplog):
    caplog.set_level(logging.INFO, logger="segue.controller.leader")
    store = MemoryStore()

    async def scenario() -> float:
        a, b = Elector(store, "a-1", FAST), Elector(store, "b-2", FAST)
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        waiting = asyncio.create_task(b.acquire())
        await asyncio.sleep(FAST.lease_duration * 2)  # well past expiry: a keeps renewing
        assert not waiting.done() and store.holder() == "a-1"
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        released = asyncio.get_running_loop().time()
        await a.release()
        await asyncio.wait_for(waiting, FAST.lease_duration)
        took = asyncio.get_running_loop().time() - released
        a.close()
        b.close()
        return took

    took = asyncio.run(scenario())
    assert store.holder() == "b-2"
    # No wait for expiry (at least a lease duration after b last saw a renewal).
    assert took < FAST.lease_duration / 2
    standing = lines(caplog, "standing by")
    assert len(standing) == 1, standing
    assert standing[0].startswith("standing by: Lease ops/segue-operator is held by a-1")
    assert lines(caplog, "became leader") == [
        "became leader: Lease ops/segue-operator is held by a-1 (created it)",
        "became leader: Lease ops/segue-operator is held by b-2 (it was free)",
    ]
    assert lines(caplog, "released Lease") == ["released Lease ops/segue-operator"]


def test_a_silent_holder_is_replaced_only_after_the_lease_duration(caplog):
    caplog.set_level(logging.INFO, logger="segue.controller.leader")
    store = MemoryStore()

    async def scenario() -> float:
        a, b = Elector(store, "a-1", FAST), Elector(store, "b-2", FAST)
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        waiting = asyncio.create_task(b.acquire())
        await asyncio.sleep(0.35)
        holding.cancel()  # dies without a word: no release
        await asyncio.gather(holding, return_exceptions=True)
        died = asyncio.get_running_loop().time()
        await asyncio.wait_for(waiting, 3 * FAST.lease_duration)
        a.close()
        b.close()
        return asyncio.get_running_loop().time() - died

    took = asyncio.run(scenario())
    assert store.holder() == "b-2"
    assert FAST.lease_duration - FAST.retry_period <= took
    assert took < 2 * FAST.lease_duration  # the exact bound: the simulation above
    assert lines(caplog, "became leader")[-1].endswith("(a-1 stopped renewing it)")


def test_the_holder_gives_up_when_another_process_takes_the_lease():
    store = MemoryStore()

    async def scenario() -> str:
        a = Elector(store, "a-1", FAST)
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(0.25)
        store.steal("intruder-9")
        reason = await asyncio.wait_for(holding, FAST.renew_deadline)
        a.close()
        return reason

    assert asyncio.run(scenario()) == "Lease ops/segue-operator is now held by intruder-9"


def test_the_holder_gives_up_at_the_renew_deadline_when_the_api_server_is_gone(caplog):
    caplog.set_level(logging.INFO, logger="segue.controller.leader")
    store = MemoryStore()

    async def scenario() -> tuple[str, float]:
        a = Elector(store, "a-1", FAST)
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(0.25)
        store.down = True
        reason = await asyncio.wait_for(holding, 2 * FAST.lease_duration)
        # Measured from the last renewal that went through.
        late = a.clock() - a.renewed_at
        a.close()
        return reason, late

    reason, late = asyncio.run(scenario())
    assert reason.startswith("could not renew Lease ops/segue-operator for 0.7s")
    assert "ConnectionRefusedError" in reason
    # Given up at the deadline, before anyone could take over.
    assert FAST.renew_deadline - 0.02 <= late < FAST.lease_duration
    # One warning for the outage, not one per attempt.
    assert len(lines(caplog, "renewing Lease")) == 1


def test_the_holder_survives_a_short_outage():
    store = MemoryStore()

    async def scenario() -> None:
        a = Elector(store, "a-1", FAST)
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        store.down = True
        await asyncio.sleep(FAST.renew_deadline / 2)
        store.down = False
        await asyncio.sleep(FAST.lease_duration)
        assert not holding.done()
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        a.close()

    asyncio.run(scenario())
    assert store.holder() == "a-1"


def test_a_deleted_lease_is_recreated_by_its_holder():
    store = MemoryStore()

    async def scenario() -> None:
        a = Elector(store, "a-1", FAST)
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(0.15)
        with store.lock:
            store.obj = None
        await asyncio.sleep(0.3)
        assert not holding.done()
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        a.close()

    asyncio.run(scenario())
    assert store.holder() == "a-1"


# --- run_elected: what the process does around kopf -------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_standby_answers_liveness_and_starts_the_operator_only_once_it_leads():
    store = MemoryStore()
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    started = asyncio.Event()

    async def operate(stop: asyncio.Event, ready: asyncio.Event) -> None:
        started.set()
        await stop.wait()

    def probe() -> int:
        with urllib.request.urlopen(url, timeout=1) as r:
            status: int = r.status
            return status

    async def scenario() -> int:
        a, b = Elector(store, "a-1", FAST), Elector(store, "b-2", FAST)
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        elected = asyncio.create_task(run_elected_once(b, operate, url))
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(probe) == 200
        assert not started.is_set()  # standing by: no operator
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        await a.release()
        await asyncio.wait_for(started.wait(), 5)
        # Leading: the standby's endpoint is closed, for kopf to serve the same port.
        with pytest.raises(OSError):
            await asyncio.to_thread(probe)
        elected.cancel()
        await asyncio.gather(elected, return_exceptions=True)
        a.close()
        return 0

    asyncio.run(scenario())
    assert store.holder() == "b-2"


async def run_elected_once(
    elector: Elector, operate: Any, liveness: str | None, exits: list[int] | None = None
) -> int:
    return await leader.run_elected(
        elector,
        operate,
        liveness,
        handle_signals=False,
        exit_hard=(exits.append if exits is not None else _no_exit),
    )


def _no_exit(code: int) -> None:
    raise AssertionError(f"exit_hard({code}) called")


def test_losing_the_lease_stops_the_operator_and_exits_1(caplog):
    caplog.set_level(logging.INFO, logger="segue.controller.leader")
    store = MemoryStore()
    stopped: list[float] = []

    async def operate(stop: asyncio.Event, ready: asyncio.Event) -> None:
        await stop.wait()
        stopped.append(asyncio.get_running_loop().time())

    async def scenario() -> tuple[int, list[int]]:
        a = Elector(store, "a-1", FAST)
        exits: list[int] = []
        elected = asyncio.create_task(run_elected_once(a, operate, None, exits))
        await asyncio.sleep(0.3)
        store.steal("intruder-9")
        return await asyncio.wait_for(elected, FAST.lease_duration), exits

    code, exits = asyncio.run(scenario())
    assert (code, exits) == (1, [1])
    assert stopped, "the operator was not told to stop"
    assert lines(caplog, "lost leadership") == [
        "lost leadership: Lease ops/segue-operator is now held by intruder-9; "
        "stopping the operator and exiting"
    ]


def test_an_operator_that_stops_by_itself_releases_the_lease():
    store = MemoryStore()

    async def operate(stop: asyncio.Event, ready: asyncio.Event) -> None:
        await asyncio.sleep(0.25)  # e.g. kopf stopping on SIGTERM

    async def scenario() -> int:
        return await run_elected_once(Elector(store, "a-1", FAST), operate, None)

    assert asyncio.run(scenario()) == 0
    assert store.holder() == ""


def test_an_operator_that_does_not_stop_is_abandoned_before_the_lease_could_expire():
    store = MemoryStore()

    async def operate(stop: asyncio.Event, ready: asyncio.Event) -> None:
        await asyncio.sleep(3600)  # deaf to the stop flag

    async def scenario() -> tuple[int, list[int], float]:
        a = Elector(store, "a-1", FAST)
        exits: list[int] = []
        elected = asyncio.create_task(run_elected_once(a, operate, None, exits))
        await asyncio.sleep(0.3)
        store.steal("intruder-9")
        code = await asyncio.wait_for(elected, FAST.lease_duration)
        return code, exits, a.clock() - a.renewed_at

    code, exits, since_renewal = asyncio.run(scenario())
    assert (code, exits) == (1, [1])
    assert since_renewal < FAST.lease_duration
