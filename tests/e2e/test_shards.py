"""Shards: real operator processes, each serving one shard of the Rollouts through a Lease of
its own, resized from 3 shards to 2 while Rollouts are under way (segue.controller.shards).

Each process posts its Events with reportingInstance "<identity> (shard i/n)", so every Event
on a Rollout names the process that acted; the operators' logs say when each one started
and stopped serving.
"""

from __future__ import annotations

import socket
from collections import Counter
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from segue.controller.shards import shard_of
from segue_testkit.scenario import rollout
from tests.e2e.conftest import Kube
from tests.e2e.support import (
    Operator,
    Rollouts,
    apply,
    deployment,
    httproute,
    start_operator,
    wait_until,
)

pytestmark = pytest.mark.e2e

GROUP = "segue-operator"
# Some Rollouts move on their own through the resize; the others wait for an approval
# across it, which the new processes then carry out.
PAUSES = [
    {"setWeight": 20},
    {"pause": {"duration": "3s"}},
    {"setWeight": 50},
    {"pause": {"duration": "3s"}},
    {"setWeight": 100},
]
APPROVAL = [{"setWeight": 20}, {"approval": {}}, {"setWeight": 50}, {"setWeight": 100}]


def identity(op: Operator) -> str:
    return f"{socket.gethostname()}-{op.proc.pid}"


def lines(op: Operator, text: str) -> list[str]:
    return [line for line in op.log().splitlines() if text in line]


def logged_at(line: str) -> datetime:
    """The time of a log line ("2026-03-01 12:00:00,123 INFO ..."); all the operators run
    on this machine, so their log times compare."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def pick_names(namespace: str) -> list[str]:
    """Nine Rollout names covering every pair (shard of 3, shard of 2), three per shard of 3."""
    chosen: list[str] = []
    pairs: set[tuple[int, int]] = set()
    per3: Counter[int] = Counter()
    for k in range(1000):
        name = f"app{k}"
        pair = (shard_of(namespace, name, 3), shard_of(namespace, name, 2))
        if pair not in pairs and per3[pair[0]] < 3:
            chosen.append(name)
            pairs.add(pair)
            per3[pair[0]] += 1
    for k in range(1000):
        name = f"app{k}"
        i3 = shard_of(namespace, name, 3)
        if len(chosen) < 9 and name not in chosen and per3[i3] < 3:
            chosen.append(name)
            per3[i3] += 1
    assert len(chosen) == 9 and len(pairs) == 6, (chosen, pairs)
    return chosen


@pytest.fixture
def operators() -> Any:
    started: list[Operator] = []
    yield started
    for op in started:
        op.stop()
    for op in started:
        print(f"--- operator log ({op.log_path}, exit {op.proc.returncode}) ---")
        print(op.log()[-5000:])


def sharded(kube: Kube, namespace: str, tmp_path: Path, shard: str) -> Operator:
    index, count = shard.split("/")
    return start_operator(
        kube.kubeconfig,
        tmp_path / f"op-{index}-of-{count}.log",
        [namespace],
        extra_args=["--shard", shard],
    )


def reporters(kube: Kube, namespace: str, name: str) -> list[tuple[str, str]]:
    """(reason, reportingInstance) of the Events Segue posted on a Rollout."""
    items = (
        client.CoreV1Api(kube.api_client)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        .items
    )
    return [
        (e.reason or "", e.reporting_instance or "")
        for e in items
        if (e.reporting_component or "") == "segue"
    ]


def test_three_shards_resized_to_two_during_rollouts_serve_each_rollout_once(
    kube: Kube, namespace: str, crds: None, tmp_path: Path, operators: list[Operator]
) -> None:
    names = pick_names(namespace)
    old = [sharded(kube, namespace, tmp_path, f"{i}/3") for i in range(3)]
    operators.extend(old)
    for i, op in enumerate(old):
        wait_until(f"shard {i}/3 to serve", partial(lines, op, "serving shard"), bool, 60)
        assert f"serving shard {i}/3 (Lease {namespace}/{GROUP}-{i})" in lines(op, "serving")[0]

    docs: list[dict[str, Any]] = []
    for name in names:
        docs += [
            deployment(f"{name}-v1", name, 1),
            deployment(f"{name}-v2", name, 1),
            httproute(name, f"{name}-v1", f"{name}-v2"),
        ]
    apply(kube, namespace, *docs)
    approved = set(names[::2])
    plans = {name: APPROVAL if name in approved else PAUSES for name in names}
    apply(kube, namespace, *(rollout(name, steps=plans[name]) for name in names))
    rollouts = Rollouts(kube.api_client, namespace)

    def weights() -> list[int]:
        return [int(rollouts.status(n).get("weight") or 0) for n in names]

    # Mid-way: every Rollout has moved traffic, and not all have finished.
    moved = wait_until("every Rollout to move traffic", weights, lambda w: min(w) >= 20, 120)
    assert min(moved) < 100, moved

    # The new processes start while the old ones serve. Shard Leases are named by index, so
    # shard i of 2 stands by on the Lease that shard i of 3 holds.
    new = [sharded(kube, namespace, tmp_path, f"{i}/2") for i in range(2)]
    operators.extend(new)
    for i, op in enumerate(new):
        wait_until(f"shard {i}/2 to stand by", partial(lines, op, "standing by"), bool, 60)
        assert (
            f"standing by: Lease {namespace}/{GROUP}-{i} is held by {identity(old[i])}"
            in lines(op, "standing by")[0]
        )
    # Stopped one by one (SIGTERM, as a Helm upgrade's rollout does). Shard 0 of 2 takes its
    # Lease over from shard 0 of 3 but waits while shards 1 and 2 of 3 serve; neither new
    # process serves until the last old one has released its Lease.
    for k, op in enumerate(old):
        assert not any(lines(n, "serving shard") for n in new), "served beside 3 shards"
        op.stop()
        assert op.proc.returncode == 0, op.log()[-3000:]
        assert lines(op, "released Lease")
        if k < len(new):
            taker = new[k]
            wait_until(f"shard {k}/2 to wait", partial(lines, taker, "waits to serve"), bool)
            waiting = lines(taker, "waits to serve")
            assert len(waiting) == 1, waiting
            assert f"shard {k}/2 holds Lease {namespace}/{GROUP}-{k} but waits" in waiting[0]
            assert f"{GROUP}-2 (3 shards, held by {identity(old[2])})" in waiting[0]
    for i, op in enumerate(new):
        wait_until(f"shard {i}/2 to serve", partial(lines, op, "serving shard"), bool, 60)

    for name in approved:
        status = rollouts.status(name)
        assert (status["phase"], status["weight"]) == ("AwaitingApproval", 20), (name, status)
        rollouts.annotate(name, {"segue.dev/approve": str(status["step"])})
    for name in names:
        wait_until(f"{name} Succeeded", partial(rollouts.phase, name), "Succeeded".__eq__, 120)

    # No two shard counts served at once: every old process had stopped serving before any
    # new one started.
    old_stops = [logged_at(lines(op, "stopped serving shard")[0]) for op in old]
    new_starts = [logged_at(lines(op, "serving shard")[0]) for op in new]
    assert max(old_stops) <= min(new_starts), (old_stops, new_starts)

    # Each Rollout set each weight once, and only the process of its shard acted on it.
    who = {f"{identity(op)} (shard {i}/3)": (3, i) for i, op in enumerate(old)}
    who |= {f"{identity(op)} (shard {i}/2)": (2, i) for i, op in enumerate(new)}
    for name in names:
        history = rollouts.status(name)["history"]
        assert [h["weight"] for h in history if h["event"] == "WeightSet"] == [20, 50, 100], (
            name,
            history,
        )
        events = reporters(kube, namespace, name)
        assert events, name
        for reason, instance in events:
            assert instance in who, (name, reason, instance)
            count, index = who[instance]
            assert index == shard_of(namespace, name, count), (name, reason, instance)
        # Each count acted: the old processes began every Rollout (20 %), and the new ones
        # carried out the approvals given after the resize.
        assert any(who[i][0] == 3 and r == "WeightSet" for r, i in events), (name, events)
        if name in approved:
            assert any(who[i][0] == 2 and r == "Approved" for r, i in events), (name, events)

    for op in (*old, *new):
        assert not lines(op, "must stop serving") and not lines(op, "lost leadership")
    assert all(op.proc.poll() is None for op in new)
