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
import urllib3
from kubernetes.client.exceptions import ApiException

from segue.controller import leader
from segue.controller.kube import unreachable
from segue.controller.leader import (
    Acquire,
    Conflict,
    Elector,
    LeaseGone,
    LeaseRecord,
    Seen,
    Standby,
    Taken,
    Tenure,
    Timing,
    Wait,
    claim_spec,
    judge,
    lease_namespace,
    lease_object,
    micro_time,
    observe,
    release_spec,
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


# --- the holder through failed renewals (Tenure) and a standby through failed reads ---------


def test_what_counts_as_unreachable():
    refused = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    answerless: list[BaseException] = [
        ConnectionRefusedError("connection refused"),
        ConnectionResetError("connection reset by peer"),
        TimeoutError(),  # the elector's own wait, or asyncio's
        urllib3.exceptions.MaxRetryError(None, "/", refused),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("Connection aborted."),
        urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),  # type: ignore[arg-type]
        ApiException(status=0, reason="SSLError"),  # the client's TLS failures
        ApiException(status=502),
        ApiException(status=503),
        ApiException(status=504),
    ]
    for e in answerless:
        assert unreachable(e), e
    answers: list[BaseException] = [
        ApiException(status=403),
        ApiException(status=401),
        ApiException(status=429),
        ApiException(status=500),
        ApiException(status=422),
        ValueError("a bug"),
    ]
    for e in answers:
        assert not unreachable(e), e


def test_the_holder_gives_up_at_the_renew_deadline_while_the_server_answers_with_errors():
    tenure = Tenure(T, renewed_at=100.0)
    assert tenure.deadline() is None and not tenure.lost(1e9)  # nothing failed
    tenure.answered("403 Forbidden")
    tenure.answered("500 Internal Server Error")
    assert tenure.deadline() == 107.0
    assert not tenure.lost(106.99)
    assert tenure.lost(107.0)
    # Gone by stop_by, before the earliest takeover at 110.
    assert 107.0 < tenure.stop_by() < 110.0
    tenure.renewed(106.0)
    assert tenure.deadline() is None and tenure.anchor == 106.0


def test_the_holder_leads_on_through_an_outage_of_any_length():
    tenure = Tenure(T, renewed_at=0.0)
    # The 78 s outage of the issue: every renewal from 2 s to 80 s is unanswered.
    for started in range(2, 81, 2):
        tenure.unanswered(float(started))
        assert tenure.deadline() is None
        assert not tenure.lost(started + T.request_timeout)
    assert tenure.outage_since == 2.0
    # It was longer than any standby's read interval: every standby restarted its clock
    # inside it, so the deadline of errors that follow runs from its last attempt.
    assert tenure.anchor == 80.0
    tenure.renewed(82.0)  # the server is back: the first renewal goes through
    assert (tenure.renewed_at, tenure.anchor) == (82.0, 82.0)
    assert tenure.deadline() is None and tenure.refused is None


def test_errors_after_a_long_outage_are_given_the_renew_deadline_from_its_end():
    tenure = Tenure(T, renewed_at=0.0)
    for started in range(2, 81, 2):
        tenure.unanswered(float(started))
    tenure.answered("403 Forbidden")  # the server's authorizer is still starting
    assert tenure.deadline() == 80.0 + T.renew_deadline
    assert not tenure.lost(84.0)
    tenure.renewed(84.0)
    assert tenure.deadline() is None


def test_errors_after_a_short_outage_keep_the_deadline_of_the_last_renewal():
    # An outage shorter than a standby's read interval may have gone unnoticed by the
    # standby, whose clock then still runs from the renewal at 0.
    assert T.standby_gap() == 5.0
    tenure = Tenure(T, renewed_at=0.0)
    for started in (2.0, 4.0, 6.0):
        tenure.unanswered(started)
    tenure.answered("500 Internal Server Error")
    assert tenure.anchor == 0.0
    assert tenure.lost(7.0)
    assert tenure.stop_by() < T.lease_duration


def test_the_holder_gives_up_when_the_server_answers_that_another_holds_the_lease():
    """After an outage as at any other time (the partition: a standby that could still reach
    the server took over): the first answer naming another holder ends the tenure, with no
    deadline to wait for."""
    store = MemoryStore()

    async def scenario() -> str:
        now = [0.0]
        a = Elector(store, "a-1", T, clock=lambda: now[0])
        await a.acquire()
        assert a.tenure is None
        tenure = Tenure(T, a.renewed_at)
        for started in range(2, 81, 2):
            tenure.unanswered(float(started))
        assert not tenure.lost(81.0)
        store.steal("b-2")  # what happened while a could not reach the server
        now[0] = 82.0
        result = await a._renew(now[0] + T.call_limit())
        a.close()
        assert isinstance(result, Taken)
        return result.reason

    assert asyncio.run(scenario()) == "Lease ops/segue-operator is now held by b-2"


def test_a_standby_restarts_its_clock_after_failed_reads():
    standby = Standby("b-2", T)
    lease = record(holder="a-1")
    assert standby.read(lease, 0.0) == Wait("a-1", 2.0)
    # The API server goes away at 1 s for 78 s: every read fails.
    now = 2.0
    while now < 79.0:
        assert standby.failed(now) == now + T.retry_period
        now += T.retry_period
    assert standby.seen is None and standby.blind_since == 2.0
    # Back at 80 s with the Lease as it was: the holder has not renewed (it could not), and
    # the lease "expired" long ago by the old clock, but the clock starts again now.
    assert standby.read(lease, 80.0) == Wait("a-1", 82.0)
    assert standby.blind_since is None
    assert isinstance(standby.read(lease, 89.9), Wait)
    assert standby.read(lease, 90.0) == Acquire("expired")  # a full duration of silence


def test_a_standby_claims_only_after_a_full_duration_of_silence_observed_after_the_outage():
    standby = Standby("b-2", T)
    assert isinstance(standby.read(record(holder="a-1"), 0.0), Wait)
    standby.failed(8.0)  # one failed read, just before the Lease would have expired
    assert isinstance(standby.read(record(holder="a-1"), 10.0), Wait)
    # The holder renews 2 s after the server's return: the silence is broken.
    renewed = record(holder="a-1", rv="2", renew_time=NOW + timedelta(seconds=12))
    assert isinstance(standby.read(renewed, 12.0), Wait)
    assert isinstance(standby.read(renewed, 21.9), Wait)
    assert standby.read(renewed, 22.0) == Acquire("expired")
    # A failed claim counts as a failed read: what was seen is forgotten.
    standby.failed(22.1)
    assert standby.read(renewed, 24.0) == Wait("a-1", 26.0)


def simulate_outage(
    start: float, end: float, phase: float, refused_after: bool = False, timing: Timing = T
) -> tuple[float | None, float | None]:
    """A holder (renewing from t=0) and a standby (reading from ``phase``) through an outage
    of the API server from ``start`` to ``end``: every request in it fails, requests take no
    time. With ``refused_after`` the server then answers the holder's renewals with 403
    while the standby's reads go through. Returns when the standby claims (None: never, in
    120 s) and by when the holder had stopped acting (None: it never gave up)."""

    def down(t: float) -> bool:
        return start <= t < end

    tenure = Tenure(timing, renewed_at=0.0)
    lease = record(holder="a-1", rv="0")
    standby = Standby("b-2", timing)
    next_renewal, next_read = timing.retry_period, phase
    gone: float | None = None
    while min(next_renewal, next_read) < 120.0:
        if next_renewal <= next_read:
            now = next_renewal
            if tenure.lost(now):
                gone = tenure.stop_by()
                next_renewal = float("inf")
                continue
            if down(now):
                tenure.unanswered(now)
            elif refused_after and now >= end:
                tenure.answered("403 Forbidden")
            else:
                tenure.renewed(now)
                renewed = NOW + timedelta(seconds=now)
                lease = record(holder="a-1", rv=str(now), renew_time=renewed)
            next_renewal = now + timing.retry_period
            deadline = tenure.deadline()
            if deadline is not None:
                next_renewal = min(next_renewal, deadline)
        else:
            now = next_read
            if down(now):
                next_read = standby.failed(now)
                continue
            decision = standby.read(lease, now)
            if isinstance(decision, Acquire):
                return now, gone
            next_read = decision.until
    return None, gone


@pytest.mark.parametrize("length", [0.5, 1.9, 3.0, 4.9, 7.0, 9.9, 10.5, 20.0, 78.0])
@pytest.mark.parametrize("start", [1.0, 2.0, 2.7, 3.99])
@pytest.mark.parametrize("phase", [0.0, 0.3, 1.0, 1.99])
def test_the_holder_keeps_the_lease_across_any_outage(length, start, phase):
    claimed, gone = simulate_outage(start, start + length, phase)
    assert (claimed, gone) == (None, None)


@pytest.mark.parametrize("length", [0.5, 1.9, 3.0, 4.9, 5.5, 7.0, 9.9, 10.5, 20.0, 78.0])
@pytest.mark.parametrize("start", [1.0, 2.0, 2.7, 3.99])
@pytest.mark.parametrize("phase", [0.0, 0.3, 1.0, 1.99])
def test_a_holder_refused_after_an_outage_is_gone_before_the_standby_claims(length, start, phase):
    claimed, gone = simulate_outage(start, start + length, phase, refused_after=True)
    assert claimed is not None and gone is not None
    assert gone < claimed


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
        self.refuse: Exception | None = None  # what it answers to every request instead

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("connection refused")
        if self.refuse is not None:
            raise self.refuse

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


class View:
    """A store as one process reaches it: ``down`` cuts this process off alone."""

    namespace = MemoryStore.namespace
    name = MemoryStore.name

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise TimeoutError("timed out")

    def get(self) -> dict[str, Any] | None:
        self._check()
        return self.store.get()

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return self.store.create(body)

    def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return self.store.replace(body)


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


def test_the_holder_leads_on_through_an_outage_and_a_standby_waits_it_out(caplog):
    caplog.set_level(logging.INFO, logger="segue.controller.leader")
    store = MemoryStore()

    async def scenario() -> None:
        a, b = Elector(store, "a-1", FAST), Elector(store, "b-2", FAST)
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        waiting = asyncio.create_task(b.acquire())
        await asyncio.sleep(0.25)
        store.down = True
        # Longer than the lease duration and than a standby's read interval.
        await asyncio.sleep(3 * FAST.lease_duration)
        assert not holding.done()
        store.down = False
        back = a.clock()
        # A full lease duration after the server's return, and more: a renewed within a
        # retry period, so b, whose clock started again, goes on standing by.
        await asyncio.sleep(2 * FAST.lease_duration)
        assert not holding.done() and not waiting.done()
        assert a.renewed_at > back
        for task in (holding, waiting):
            task.cancel()
        await asyncio.gather(holding, waiting, return_exceptions=True)
        a.close()
        b.close()

    asyncio.run(scenario())
    assert store.holder() == "a-1"
    # One line for the outage and one for its end on the holder's side, at INFO (the
    # operator's Kubernetes client warns about the outage itself); the standby warns once.
    down = [r for r in caplog.records if "API server unreachable" in r.getMessage()]
    # Either may notice first: the holder renews and the standby reads on their own clocks.
    assert sorted((r.levelno, r.getMessage().split(":")[0]) for r in down) == [
        (logging.INFO, "renewing Lease ops/segue-operator"),
        (logging.WARNING, "leader election"),
    ], [r.getMessage() for r in down]
    assert len(lines(caplog, "renewed Lease ops/segue-operator again after")) == 1
    assert len(lines(caplog, "readable again after")) == 1
    assert not lines(caplog, "became leader: Lease ops/segue-operator is held by b-2")


def test_the_holder_gives_up_at_the_renew_deadline_when_the_server_refuses(caplog):
    caplog.set_level(logging.INFO, logger="segue.controller.leader")
    store = MemoryStore()

    async def scenario() -> tuple[str, float]:
        a = Elector(store, "a-1", FAST)
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(0.25)
        store.refuse = ApiException(status=403, reason="Forbidden")
        reason = await asyncio.wait_for(holding, 2 * FAST.lease_duration)
        # Measured from the last renewal that went through.
        late = a.clock() - a.renewed_at
        a.close()
        return reason, late

    reason, late = asyncio.run(scenario())
    assert reason == "could not renew Lease ops/segue-operator for 0.7s (last error: 403 Forbidden)"
    # Given up at the deadline, before anyone could take over.
    assert FAST.renew_deadline - 0.02 <= late < FAST.lease_duration
    # One warning for the streak, not one per attempt.
    assert len(lines(caplog, "renewing Lease")) == 1


def test_a_partitioned_holder_loses_the_lease_and_learns_it_when_it_is_back():
    """The holder cannot reach the server, the standby can: the standby takes over after the
    lease duration; the old holder leads on while cut off, and its first renewal that gets
    an answer names the new holder."""
    store = MemoryStore()
    cut_off = View(store)

    async def scenario() -> tuple[str, float]:
        a, b = Elector(cut_off, "a-1", FAST), Elector(store, "b-2", FAST)
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        waiting = asyncio.create_task(b.acquire())
        await asyncio.sleep(0.25)
        cut_off.down = True
        cut = asyncio.get_running_loop().time()
        await asyncio.wait_for(waiting, 3 * FAST.lease_duration)
        took = asyncio.get_running_loop().time() - cut
        assert not holding.done()  # cut off, it cannot know
        cut_off.down = False
        reason = await asyncio.wait_for(holding, FAST.lease_duration)
        a.close()
        b.close()
        return reason, took

    reason, took = asyncio.run(scenario())
    assert store.holder() == "b-2"
    assert FAST.lease_duration - FAST.retry_period <= took
    assert reason == "Lease ops/segue-operator is now held by b-2"


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


def test_release_after_a_renewal_whose_answer_was_lost(caplog):
    caplog.set_level(logging.INFO, logger="segue.controller.leader")
    store = MemoryStore()

    async def scenario() -> None:
        a = Elector(store, "a-1", FAST)
        await a.acquire()
        with store.lock:  # a renewal went through, but its answer never came back
            assert store.obj is not None
            store._stored(copy.deepcopy(store.obj))
        await a.release()
        a.close()

    asyncio.run(scenario())
    assert store.holder() == ""
    assert lines(caplog, "released Lease") == ["released Lease ops/segue-operator"]


def test_a_lease_someone_else_holds_is_not_released(caplog):
    caplog.set_level(logging.INFO, logger="segue.controller.leader")
    store = MemoryStore()

    async def scenario() -> None:
        a = Elector(store, "a-1", FAST)
        await a.acquire()
        store.steal("b-2")
        await a.release()
        a.close()

    asyncio.run(scenario())
    assert store.holder() == "b-2"
    assert not lines(caplog, "release")


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
