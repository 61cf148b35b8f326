"""Shards (segue.controller.shards, segue.controller.shard_gate): the shard map, the flag, the
resize decisions as pure functions with an injected clock, the per-shard filter, and the
gate around run_elected against in-memory Leases."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from segue.controller import leader
from segue.controller.leader import SERVING_ANNOTATION, Conflict, Elector, LeaseGone, Timing
from segue.controller.main import parse_args
from segue.controller.shard_gate import ShardGate
from segue.controller.shards import (
    MAX_SHARDS,
    SHARD_LABEL,
    SHARDS_LABEL,
    GroupLease,
    GroupView,
    ServingCheck,
    Shard,
    group_lease,
    lease_names,
    only_shard,
    shard_of,
)
from segue.controller.workers import Supervisor, needs_work

pytestmark = pytest.mark.timeout(60)

T = Timing()
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

# --- the shard map --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "name", "expected"),
    [
        # (2, 3, 7, 32 shards): fixed, so a release that changed the map would fail here.
        ("default", "shop", [1, 0, 1, 27]),
        ("payments", "checkout", [1, 0, 6, 15]),
        ("t-1", "a", [1, 1, 0, 31]),
        ("", "x", [0, 1, 5, 4]),
        ("team-a", "api-v2", [1, 0, 0, 27]),
    ],
)
def test_the_shard_of_a_rollout_is_fixed_by_its_namespace_and_name(namespace, name, expected):
    assert [shard_of(namespace, name, n) for n in (2, 3, 7, 32)] == expected


def test_one_shard_holds_everything():
    assert Shard().owns("any", "thing")
    assert all(shard_of("ns", f"r{i}", 1) == 0 for i in range(50))


def test_namespace_and_name_are_not_interchangeable():
    # "a/b-c" vs "a-b/c" hash differently: the separator is part of the key.
    keys = {shard_of("a", "b-c", 32), shard_of("a-b", "c", 32)}
    assert len(keys) == 2


def test_a_thousand_rollouts_spread_evenly_over_three_shards():
    counts = Counter(shard_of(f"team-{i % 17}", f"rollout-{i}", 3) for i in range(1000))
    assert set(counts) == {0, 1, 2}
    even = 1000 / 3
    for shard, count in counts.items():
        assert abs(count - even) <= 0.15 * even, (shard, counts)


def test_each_rollout_belongs_to_exactly_one_shard():
    for n in (1, 2, 3, 5):
        shards = [Shard(i, n) for i in range(n)]
        for i in range(100):
            assert sum(s.owns("ns", f"r{i}") for s in shards) == 1


# --- the flag -------------------------------------------------------------------------------


def test_shard_parses_index_slash_count():
    assert Shard.parse("0/1") == Shard()
    assert Shard.parse(" 2 / 3 ") == Shard(2, 3)
    assert str(Shard(2, 3)) == "2/3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3", "expected INDEX/COUNT such as 0/3, not '3'"),
        ("a/b", "expected INDEX/COUNT"),
        ("-1/3", "expected INDEX/COUNT"),
        ("3/3", "the shard index must be 0 to 2 (shards count from 0), not 3"),
        ("0/0", "the shard count must be 1 to 32, not 0"),
        ("0/33", "the shard count must be 1 to 32, not 33"),
        ("1/1", "the shard index must be 0 to 0"),
    ],
)
def test_a_bad_shard_is_refused_saying_why(text, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        Shard.parse(text)


def test_the_shard_flag_and_its_environment_variable(monkeypatch, capsys):
    monkeypatch.delenv("SEGUE_SHARD", raising=False)
    assert parse_args([]).shard == Shard(0, 1)
    assert parse_args(["--shard", "1/3"]).shard == Shard(1, 3)
    monkeypatch.setenv("SEGUE_SHARD", "2/4")
    assert parse_args([]).shard == Shard(2, 4)
    with pytest.raises(SystemExit):
        parse_args(["--shard", "4/4"])
    assert "--shard: the shard index must be 0 to 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--shard", "0/2", "--no-leader-election"])
    assert "shards need leader election" in capsys.readouterr().err
    # One shard without leader election stays allowed, as before shards.
    monkeypatch.delenv("SEGUE_SHARD")
    assert parse_args(["--no-leader-election"]).shard == Shard()


def test_lease_names_keep_the_single_shard_name_and_add_the_index():
    assert Shard().lease_name("segue-operator") == "segue-operator"
    assert Shard(0, 3).lease_name("segue-operator") == "segue-operator-0"
    assert Shard(2, 3).lease_name("segue-operator") == "segue-operator-2"
    # The same name for an index whatever the count: RBAC needs a fixed list of names.
    assert Shard(1, 2).lease_name("g") == Shard(1, 5).lease_name("g") == "g-1"
    names = lease_names("g")
    assert len(names) == MAX_SHARDS + 1 and names[0] == "g" and names[-1] == "g-31"
    assert all(Shard(i, n).lease_name("g") in names for n in (1, 7, 32) for i in range(n))
    assert Shard(1, 3).labels() == {SHARD_LABEL: "1", SHARDS_LABEL: "3"}


# --- the per-shard filter -------------------------------------------------------------------


def rollout_body(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "generation": 1}, "status": {}}


def test_a_supervisor_starts_workers_only_for_rollouts_of_its_shard():
    names = [f"r{i}" for i in range(30)]

    async def scenario(shard: Shard) -> set[str]:
        async def never_done(worker: Any) -> float | None:
            """Lasts until its worker is stopped: only which workers start matters."""
            await asyncio.Event().wait()
            return None

        supervisor = Supervisor(never_done, has_work=only_shard(shard, needs_work))
        for name in names:
            supervisor.rollout_event("ADDED", rollout_body("ns", name))
        started = {name for _, name in supervisor.workers}
        await supervisor.stop()
        return started

    served = [asyncio.run(scenario(Shard(i, 3))) for i in range(3)]
    for i, started in enumerate(served):
        assert started == {n for n in names if shard_of("ns", n, 3) == i}
    assert set().union(*served) == set(names)
    assert sum(len(s) for s in served) == len(names)
    # Finished Rollouts of the shard still get none.
    done = rollout_body("ns", next(iter(served[0])))
    done["status"] = {"phase": "Succeeded", "observedGeneration": 1}
    assert not only_shard(Shard(0, 3), needs_work)(done)


# --- the Leases of a group ------------------------------------------------------------------


def lease(
    name: str,
    holder: str = "h",
    renew: int = 0,
    shards: int | None = 3,
    serving: bool = True,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "resourceVersion": str(renew)}
    if shards is not None:
        meta["labels"] = {SHARDS_LABEL: str(shards)}
        if serving:
            meta["annotations"] = {SERVING_ANNOTATION: "true"}
    return {
        "metadata": meta,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 10,
            "renewTime": f"2026-03-01T12:00:{renew:02d}.000000Z",
        },
    }


def members(*objs: dict[str, Any]) -> list[GroupLease]:
    found = [group_lease("g", obj) for obj in objs]
    return [x for x in found if x is not None]


def test_which_leases_belong_to_the_group_and_what_they_say():
    assert group_lease("g", lease("other")) is None
    assert group_lease("g", lease("g-x")) is None
    assert group_lease("g", lease("g-32")) is None  # beyond the shards there can be
    assert group_lease("g", lease("gg-1")) is None
    one = group_lease("g", lease("g-1", shards=3, serving=False))
    assert one is not None and (one.shards, one.serving) == (3, False)
    # The plain Lease of a Segue without shards: one shard, serving whenever held.
    legacy = group_lease("g", lease("g", shards=None))
    assert legacy is not None and (legacy.shards, legacy.serving) == (1, True)
    # A shard Lease without the label: an unknown count, never taken for this one.
    unknown = group_lease("g", lease("g-0", shards=None))
    assert unknown is not None and unknown.shards == 0


def test_a_resize_waits_for_live_leases_of_another_count_and_not_for_its_own():
    view = GroupView(Shard(0, 2), T)
    leases = members(
        lease("g-0", holder="me"),  # own: left out
        lease("g-1", holder="old-1", shards=3),
        lease("g-2", holder="old-2", shards=3),
        lease("g-9", holder="peer", shards=2),  # same count: never waited for
    )
    blocking = view.look(leases, own="g-0", now=100.0)
    assert [b.name for b in blocking] == ["g-1", "g-2"]


def test_a_lease_of_another_count_blocks_until_released():
    view = GroupView(Shard(0, 2), T)
    held = members(lease("g-2", holder="old", renew=1, shards=3))
    assert view.look(held, "g-0", 100.0)
    released = members(lease("g-2", holder="", renew=2, shards=3))
    assert view.look(released, "g-0", 100.5) == []


def test_a_lease_of_another_count_blocks_until_it_goes_unrenewed_for_its_duration():
    """Judged on this process's clock: first sight counts as a change, each renewal too."""
    view = GroupView(Shard(0, 2), T)
    assert view.look(members(lease("g-2", renew=1)), "g-0", 100.0)
    assert view.look(members(lease("g-2", renew=2)), "g-0", 105.0)  # renewed at 105
    assert view.look(members(lease("g-2", renew=2)), "g-0", 114.9)
    assert view.look(members(lease("g-2", renew=2)), "g-0", 115.0) == []
    # Renewed again: live again.
    assert view.look(members(lease("g-2", renew=3)), "g-0", 116.0)


def test_after_a_failed_look_a_lease_counts_as_live_for_a_full_duration_again():
    view = GroupView(Shard(0, 2), T)
    stale = members(lease("g-2", renew=1))
    view.look(stale, "g-0", 100.0)
    assert view.look(stale, "g-0", 111.0) == []
    view.failed()
    assert view.look(stale, "g-0", 112.0)  # its holder may have renewed during the outage
    assert view.look(stale, "g-0", 122.0) == []


def test_deleted_leases_stop_blocking():
    view = GroupView(Shard(1, 2), T)
    assert view.look(members(lease("g-2")), "g-1", 100.0)
    assert view.look([], "g-1", 100.1) == []


def test_a_legacy_single_shard_lease_blocks_a_sharded_process():
    view = GroupView(Shard(0, 3), T)
    blocking = view.look(members(lease("g", holder="old", shards=None)), "g-0", 100.0)
    assert [(b.name, b.shards) for b in blocking] == [("g", 1)]
    # And a single-shard process waits for the shards of a larger count.
    single = GroupView(Shard(), T)
    assert [b.name for b in single.look(members(lease("g-1", shards=3)), "g", 100.0)] == ["g-1"]


def test_a_server_stops_only_for_a_serving_lease_of_another_count_claimed_since_it_started():
    start = members(
        lease("g-2", holder="gone", renew=1, shards=3),  # judged expired at the start
        lease("g-1", holder="", renew=1, shards=3),  # released
    )
    check = ServingCheck.at_start(start)
    me = Shard(0, 2)
    # Nothing changed: no intruder, whatever the clock says.
    assert check.intruders(me, start, "g-0") == []
    # A waiting holder of another count (not serving): it waits for this one; no intruder.
    waiting = members(lease("g-1", holder="new", renew=5, shards=3, serving=False))
    assert check.intruders(me, waiting, "g-0") == []
    # The holder judged gone renews again, serving: intruder.
    back = members(lease("g-2", holder="gone", renew=9, shards=3))
    assert [x.name for x in check.intruders(me, back, "g-0")] == ["g-2"]
    # A Segue without shards takes the plain Lease: it serves whenever it holds.
    legacy = members(lease("g", holder="old", shards=None))
    assert [x.name for x in check.intruders(me, legacy, "g-0")] == ["g"]
    # Same count, or released: never.
    peers = members(lease("g-1", holder="p", renew=7, shards=2), lease("g-3", holder="", renew=8))
    assert check.intruders(me, peers, "g-0") == []


# --- the elector's Lease metadata -----------------------------------------------------------


def test_the_holder_labels_its_lease_and_marks_it_only_while_serving():
    base = {"metadata": {"labels": {"team": "x"}, "annotations": {SERVING_ANNOTATION: "true"}}}
    body = leader.lease_object(
        base, "ops", "g-1", {}, labels={SHARDS_LABEL: "3"}, annotations={SERVING_ANNOTATION: None}
    )
    assert body["metadata"]["labels"] == {"team": "x", SHARDS_LABEL: "3"}
    assert "annotations" not in body["metadata"]
    marked = leader.lease_object(None, "ops", "g-1", {}, annotations={SERVING_ANNOTATION: "true"})
    assert marked["metadata"]["annotations"] == {SERVING_ANNOTATION: "true"}


# --- the gate against in-memory Leases ------------------------------------------------------


class Leases:
    """The Leases of one namespace in memory, with the API server's write rules."""

    namespace = "ops"

    def __init__(self) -> None:
        self.objs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.rv = 0

    def _stored(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objs[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    def put(self, body: dict[str, Any]) -> None:
        with self.lock:
            self._stored(body)

    def list(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self.objs.values()))

    def one(self, name: str) -> OneLease:
        return OneLease(self, name)


class OneLease:
    namespace = Leases.namespace

    def __init__(self, leases: Leases, name: str) -> None:
        self.leases, self.name = leases, name

    def get(self) -> dict[str, Any] | None:
        with self.leases.lock:
            return copy.deepcopy(self.leases.objs.get(self.name))

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.leases.lock:
            if self.name in self.leases.objs:
                raise Conflict("AlreadyExists")
            return self.leases._stored(body)

    def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.leases.lock:
            current = self.leases.objs.get(self.name)
            if current is None:
                raise LeaseGone()
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise Conflict("Conflict")
            return self.leases._stored(body)


FAST = Timing(lease_duration=1.0, renew_deadline=0.7, retry_period=0.1, request_timeout=0.1)


async def until(what: str, condition: Callable[[], bool]) -> None:
    for _ in range(500):  # 10 s
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within 10 s: {what}")


def held_by(leases: Leases, name: str, holder: str, shards: int, serving: bool) -> None:
    body = leader.lease_object(
        None,
        "ops",
        name,
        leader.claim_spec(holder, None, datetime.now(UTC), FAST),
        labels={SHARDS_LABEL: str(shards)},
        annotations={SERVING_ANNOTATION: "true" if serving else None},
    )
    current = leases.objs.get(name)
    if current is not None:
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    leases.put(body)


def shard_process(leases: Leases, shard: Shard, identity: str) -> tuple[Elector, ShardGate]:
    elector = Elector(leases.one(shard.lease_name("g")), identity, FAST, labels=shard.labels())
    return elector, ShardGate(elector, shard, "g", leases.list)


def test_a_holder_waits_while_another_count_serves_and_serves_once_it_released(caplog):
    caplog.set_level(logging.INFO, logger="segue.controller.shard_gate")
    leases = Leases()
    served: list[str] = []

    async def old_holder_renews(stop: asyncio.Event) -> None:
        while not stop.is_set():
            held_by(leases, "g-2", "old-2", 3, serving=True)
            await asyncio.sleep(FAST.retry_period)

    async def scenario() -> int:
        renewing = asyncio.Event()
        old = asyncio.create_task(old_holder_renews(renewing))
        elector, gate = shard_process(leases, Shard(0, 2), "new-0")

        async def operate(stop: asyncio.Event, ready: asyncio.Event) -> None:
            served.append("started")
            ready.set()
            await asyncio.sleep(0.3)

        elected = asyncio.create_task(
            leader.run_elected(elector, operate, None, handle_signals=False, gate=gate)
        )
        # Three lease durations: the old holder renews all along, so nothing is served.
        await asyncio.sleep(FAST.lease_duration * 3)
        assert served == [] and not elected.done()
        own = leases.objs["g-0"]
        assert own["spec"]["holderIdentity"] == "new-0"  # it holds its Lease meanwhile
        assert own["metadata"]["labels"][SHARDS_LABEL] == "2"
        assert SERVING_ANNOTATION not in (own["metadata"].get("annotations") or {})
        renewing.set()
        await old
        held_by(leases, "g-2", "", 3, serving=False)  # released on shutdown
        return await asyncio.wait_for(elected, FAST.lease_duration * 3)

    assert asyncio.run(scenario()) == 0
    assert served == ["started"]
    waits = [r.getMessage() for r in caplog.records if "waits to serve" in r.getMessage()]
    assert len(waits) == 1, waits
    assert "ops/g-2 (3 shards, held by old-2)" in waits[0]
    assert any("serving shard 0/2 (Lease ops/g-0)" in r.getMessage() for r in caplog.records)
    assert any("stopped serving shard 0/2" in r.getMessage() for r in caplog.records)
    assert leases.objs["g-0"]["spec"].get("holderIdentity") is None  # released


def test_a_serving_holder_marks_its_lease_and_stops_when_another_count_serves_again(caplog):
    caplog.set_level(logging.INFO)
    leases = Leases()
    # A holder of 3 shards whose Lease has gone unrenewed: judged expired after a duration.
    held_by(leases, "g-2", "stale-2", 3, serving=True)
    exits: list[int] = []
    stopped: list[bool] = []

    async def scenario() -> int:
        elector, gate = shard_process(leases, Shard(1, 2), "new-1")

        async def operate(stop: asyncio.Event, ready: asyncio.Event) -> None:
            ready.set()
            await stop.wait()
            stopped.append(True)

        elected = asyncio.create_task(
            leader.run_elected(
                elector, operate, None, handle_signals=False, exit_hard=exits.append, gate=gate
            )
        )

        def marked() -> bool:
            annotations = leases.objs.get("g-1", {}).get("metadata", {}).get("annotations")
            return (annotations or {}).get(SERVING_ANNOTATION) == "true"

        await until("its Lease marked serving", marked)
        # The stale holder comes back (it had been cut off) and renews: two counts serve.
        held_by(leases, "g-2", "stale-2", 3, serving=True)
        return await asyncio.wait_for(elected, FAST.lease_duration * 3)

    assert asyncio.run(scenario()) == 1
    assert exits == [1] and stopped == [True]
    stops = [r.getMessage() for r in caplog.records if "must stop serving" in r.getMessage()]
    assert len(stops) == 1, stops
    assert "ops/g-2 (3 shards, held by stale-2) was claimed or renewed" in stops[0]


def test_sigterm_while_waiting_to_serve_releases_the_lease_and_returns_0(caplog):
    caplog.set_level(logging.INFO, logger="segue.controller.leader")
    leases = Leases()

    async def scenario() -> int:
        elector, gate = shard_process(leases, Shard(0, 2), "new-0")

        async def operate(stop: asyncio.Event, ready: asyncio.Event) -> None:
            raise AssertionError("served while another count serves")

        async def old_holder_renews() -> None:
            while True:
                held_by(leases, "g", "old", 1, serving=True)
                await asyncio.sleep(FAST.retry_period)

        old = asyncio.create_task(old_holder_renews())
        elected = asyncio.create_task(leader.run_elected(elector, operate, None, gate=gate))
        await until("it waits to serve", lambda: "waits to serve" in caplog.text)
        assert leases.objs["g-0"]["spec"]["holderIdentity"] == "new-0"
        os.kill(os.getpid(), signal.SIGTERM)  # handled by run_elected's signal handler
        code = await asyncio.wait_for(elected, FAST.lease_duration)
        old.cancel()
        return code

    caplog.set_level(logging.INFO, logger="segue.controller.shard_gate")
    assert asyncio.run(scenario()) == 0
    assert "stopping while waiting to serve" in caplog.text
    assert leases.objs["g-0"]["spec"].get("holderIdentity") is None


def test_a_refused_look_is_logged_once_with_the_permission_needed_and_an_outage_not_at_all(
    caplog,
):
    caplog.set_level(logging.DEBUG, logger="segue.controller.shard_gate")
    leases = Leases()
    answers: list[Exception] = [
        ApiException(status=403, reason="Forbidden"),
        ApiException(status=403, reason="Forbidden"),
        ConnectionRefusedError("connection refused"),
        ConnectionRefusedError("connection refused"),
    ]

    def listing() -> list[dict[str, Any]]:
        if answers:
            raise answers.pop(0)
        return leases.list()

    async def scenario() -> None:
        elector = Elector(leases.one("g-0"), "me-0", FAST, labels=Shard(0, 2).labels())
        gate = ShardGate(elector, Shard(0, 2), "g", listing)
        await asyncio.wait_for(gate.opened(), FAST.lease_duration * 2)
        elector.close()

    asyncio.run(scenario())
    assert not answers
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "shard 0/2: listing the Leases of ops failed: 403 Forbidden (the operator needs list "
        "on leases in ops); retrying every 0.1s"
    ]
