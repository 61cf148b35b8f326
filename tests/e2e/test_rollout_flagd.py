"""Rollouts on the flagd router, driven by the real operator on the local cluster. Every flag
document the operator writes is evaluated with flagd's own evaluator (openfeature-flagd-core)
for 10,000 targeting keys, and the traffic simulator follows the flag the same way."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from itertools import pairwise
from typing import Any

import pytest
from kubernetes import client

from segue_testkit.scenario import ObjectWatch, Seen, flagd_configmap
from segue_testkit.trafficsim.sources import Split
from segue_testkit.trafficsim.sources.flagd import split_of
from tests.e2e.support import (
    Rollouts,
    Sim,
    apply,
    deployment,
    launch_sim,
    start_operator,
    wait_until,
)

pytestmark = pytest.mark.e2e

FLAGS = "shop-flags"
KEY = "flags.flagd.json"
CUSTOMERS = ("acme", "globex", "initech")
SEGMENT = {"header": "customer-id", "values": ["acme", "globex"]}
TOLERANCE = 2.0  # percentage points, over 10,000 targeting keys


def rollout(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "legacy": {"deployment": "shop-v1"},
            "new": {"deployment": "shop-v2"},
            "traffic": {
                "flagd": {
                    "configMap": FLAGS,
                    "flag": "checkout",
                    "legacyVariant": "v1",
                    "newVariant": "v2",
                }
            },
            **spec,
        },
    }


class Flags:
    """The flags ConfigMap: its document, flagd's split of it, and every version of it the
    watch saw."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.watch = ObjectWatch(self.core.list_namespaced_config_map, (namespace,)).start()

    def document(self) -> str:
        cm = self.core.read_namespaced_config_map(FLAGS, self.namespace)
        return str((cm.data or {})[KEY])

    def split(self, document: str | None = None) -> Split:
        """What flagd makes of the flag: share of 10,000 targeting keys on v2, and which of
        the customers always get v2."""
        text = self.document() if document is None else document
        return split_of(text, "checkout", "v1", "v2", CUSTOMERS, "customer-id")

    def weight(self) -> float:
        w = self.split().weight
        assert w is not None
        return w

    def writes(self, after: float = 0.0) -> list[Seen]:
        """The changes of the flag document seen since ``after`` (Unix time), in order."""
        out: list[Seen] = []
        last: str | None = None
        for seen in self.watch.events.get(FLAGS, []):
            text = (seen.obj.get("data") or {}).get(KEY)
            if seen.type != "DELETED" and text != last:
                if seen.at >= after and last is not None:
                    out.append(seen)
                last = text
        return out

    def label(self, value: str | None) -> None:
        self.core.patch_namespaced_config_map(
            FLAGS, self.namespace, {"metadata": {"labels": {"segue.dev/managed": value}}}
        )


def near(measured: float | None, weight: float) -> bool:
    return measured is not None and abs(measured - weight) <= TOLERANCE


def flag_of(seen: Seen) -> dict[str, Any]:
    flag: dict[str, Any] = json.loads(seen.obj["data"][KEY])["flags"]["checkout"]
    return flag


def new_share_by_customer(sim: Sim) -> dict[str, float]:
    """Per customer, the share of its requests the new version got over about 2 s."""
    before = sim.requests()
    wait_until(
        "the simulator to count requests for every customer",
        sim.requests,
        lambda now: all(
            sum(now.get((c, v), 0) - before.get((c, v), 0) for v in ("v1", "v2")) >= 50
            for c in CUSTOMERS
        ),
        30,
    )
    after = sim.requests()
    shares = {}
    for c in CUSTOMERS:
        new = after.get((c, "v2"), 0) - before.get((c, "v2"), 0)
        old = after.get((c, "v1"), 0) - before.get((c, "v1"), 0)
        shares[c] = new / (new + old)
    return shares


@pytest.fixture
def workloads(kube: Any, namespace: str, crds: None) -> Rollouts:
    apply(
        kube,
        namespace,
        deployment("shop-v1", "shop", 1),
        deployment("shop-v2", "shop", 1),
        flagd_configmap(FLAGS, "checkout", "v1", "v2"),
    )
    rollouts = Rollouts(kube.api_client, namespace)
    for name in ("shop-v1", "shop-v2"):
        wait_until(f"{name} ready", partial(rollouts.replicas, name), lambda r: r[1] == 1)
    return rollouts


@pytest.fixture
def flags(kube: Any, namespace: str, workloads: Rollouts) -> Iterator[Flags]:
    f = Flags(kube.api_client, namespace)
    yield f
    f.watch.stop()


@pytest.fixture
def sim(kube: Any, namespace: str, workloads: Rollouts, tmp_path: Any) -> Iterator[Sim]:
    s = launch_sim(
        kube.kubeconfig,
        "shop",
        "--flagd", f"{namespace}/{FLAGS}", "--flag", "checkout",
        "--legacy-variant", "v1", "--new-variant", "v2",
        "--customer-header", "customer-id", "--customers", ",".join(CUSTOMERS),
        log=tmp_path / "trafficsim.log",
    )  # fmt: skip
    yield s
    s.stop()


def test_promote_to_100_every_step_split_by_flagd(kube, namespace, flags, sim, operator):
    apply(kube, namespace, rollout("shop", risk="low", hold="2s"))
    rollouts = Rollouts(kube.api_client, namespace)
    wait_until("Succeeded", lambda: rollouts.phase("shop"), lambda p: p == "Succeeded", 120)
    writes = flags.writes()
    measured = [flags.split(w.obj["data"][KEY]).weight for w in writes]
    assert len(measured) == 5, measured  # one write per step
    for got, want in zip(measured, [10, 25, 50, 75, 100], strict=True):
        assert near(got, want), (measured, want)
    final = flag_of(writes[-1])
    assert final["defaultVariant"] == "v2" and "targeting" not in final
    # The rest of the document is untouched.
    doc = json.loads(flags.document())
    assert doc["flags"]["banner"]["defaultVariant"] == "on"
    assert doc["$schema"] == "https://flagd.dev/schema/v0/flags.json"
    history = rollouts.status("shop")["history"]
    assert [h["weight"] for h in history if h["event"] == "WeightSet"] == [10, 25, 50, 75, 100]
    # The simulator follows the flag, as flagd resolves it.
    wait_until("the simulator at 100", sim.weight, lambda w: w == 100.0, 10)
    assert min(new_share_by_customer(sim).values()) == 1.0


def test_segment_then_percentages_and_an_abort_clears_both_in_one_write(
    kube, namespace, flags, sim, operator
):
    rollouts = Rollouts(kube.api_client, namespace)
    steps = [{"setSegment": SEGMENT}, {"approval": {}}, {"setWeight": 20}, {"approval": {}}]
    apply(kube, namespace, rollout("shop", steps=steps))
    wait_until("the segment step", lambda: rollouts.status("shop"), _awaiting(1))
    split = flags.split()
    assert split == Split(0.0, frozenset({"acme", "globex"}))
    wait_until("the simulator to see the segment", lambda: sim.config()["segment"],
               lambda s: s == ["acme", "globex"], 10)  # fmt: skip
    shares = new_share_by_customer(sim)
    assert shares == {"acme": 1.0, "globex": 1.0, "initech": 0.0}

    rollouts.annotate("shop", {"segue.dev/approve": "1"})
    wait_until("weight 20 beside the segment", lambda: rollouts.status("shop"), _awaiting(3))
    split = flags.split()
    assert near(split.weight, 20) and split.segment == {"acme", "globex"}
    wait_until("the simulator at 20", sim.weight, lambda w: near(w, 20), 10)
    shares = new_share_by_customer(sim)
    assert shares["acme"] == shares["globex"] == 1.0
    assert 0.0 < shares["initech"] < 0.5  # split by the weight: on the new version at times

    aborted_at = time.time()
    kube.kubectl(
        "annotate", "-n", namespace, "rollout.segue.dev/shop", "segue.dev/abort=checkout errors"
    )
    wait_until("RolledBack", lambda: rollouts.phase("shop"), lambda p: p == "RolledBack", 30)
    time.sleep(1)  # anything written after RolledBack would show up as a second write
    (write,) = flags.writes(after=aborted_at)
    rolled_back = flag_of(write)
    assert rolled_back["defaultVariant"] == "v1" and "targeting" not in rolled_back
    assert flags.split() == Split(0.0)
    status = rollouts.status("shop")
    assert status.get("segment") is None
    wait_until("the simulator to drop the segment", lambda: sim.config()["segment"],
               lambda s: s == [], 10)  # fmt: skip
    assert new_share_by_customer(sim) == {"acme": 0.0, "globex": 0.0, "initech": 0.0}


def test_graceful_rollback_ramps_the_flag_down_strictly(kube, namespace, flags, operator):
    rollouts = Rollouts(kube.api_client, namespace)
    spec = {"steps": [{"setWeight": 60}, {"approval": {}}],
            "rollback": {"mode": "graceful", "duration": "8s"}}  # fmt: skip
    apply(kube, namespace, rollout("shop", **spec))
    wait_until("approval at 60", lambda: rollouts.status("shop"), _awaiting(1))
    assert near(flags.weight(), 60)
    started = time.time()
    rollouts.annotate("shop", {"segue.dev/abort": "slow checkout"})
    wait_until("RolledBack", lambda: rollouts.phase("shop"), lambda p: p == "RolledBack", 60)
    measured = [flags.split(w.obj["data"][KEY]).weight or 0.0 for w in flags.writes(started)]
    assert len(measured) >= 3, measured  # a ramp, not one jump
    assert all(a > b for a, b in pairwise(measured)), measured
    assert measured[-1] == 0.0 and measured[0] < 60


def test_kill_9_mid_plan_resumes_without_repeating_a_step(kube, namespace, flags, crds, tmp_path):
    rollouts = Rollouts(kube.api_client, namespace)
    steps = [{"setSegment": SEGMENT}, {"pause": {"duration": "1s"}}, {"setWeight": 20},
             {"approval": {}}, {"setWeight": 60}, {"pause": {"duration": "1s"}}]  # fmt: skip
    first = start_operator(kube.kubeconfig, tmp_path / "op1.log", [namespace])
    try:
        apply(kube, namespace, rollout("shop", steps=steps))
        wait_until("approval", lambda: rollouts.status("shop"), _awaiting(3))
    finally:
        first.stop(sig=9)  # killed, not shut down
    before = rollouts.status("shop")
    split = flags.split()
    assert near(split.weight, 20) and split.segment == {"acme", "globex"}

    second = start_operator(kube.kubeconfig, tmp_path / "op2.log", [namespace])
    try:
        wait_until("the second operator to lead", lambda: "became leader" in second.log(), bool, 30)
        time.sleep(3)  # a restarted operator must not repeat or skip anything by itself
        after = rollouts.status("shop")
        assert (after["phase"], after["step"]) == ("AwaitingApproval", 3)
        assert len(after["history"]) == len(before["history"])
        rollouts.annotate("shop", {"segue.dev/approve": "3"})
        wait_until("Succeeded", lambda: rollouts.phase("shop"), lambda p: p == "Succeeded", 60)
    finally:
        second.stop()
    history = rollouts.status("shop")["history"]
    events = [(h["event"], h.get("weight")) for h in history]
    assert [e for e in events if e[0] in ("SegmentSet", "WeightSet")] == [
        ("SegmentSet", 0),
        ("WeightSet", 20),
        ("WeightSet", 60),
        ("WeightSet", 100),
    ]
    assert flags.split() == Split(100.0)


def test_only_a_labelled_config_map_is_read_or_written(kube, namespace, crds, operator):
    rollouts = Rollouts(kube.api_client, namespace)
    apply(
        kube,
        namespace,
        deployment("shop-v1", "shop", 1),
        deployment("shop-v2", "shop", 1),
        flagd_configmap(FLAGS, "checkout", "v1", "v2", labelled=False),
    )
    flags = Flags(kube.api_client, namespace)
    try:
        apply(kube, namespace, rollout("shop", steps=[{"setWeight": 30}, {"approval": {}}]))
        stalled = wait_until(
            "a Stalled condition naming the label",
            lambda: {c["type"]: c for c in rollouts.status("shop").get("conditions", [])},
            lambda c: c.get("Stalled", {}).get("status") == "True",
            60,
        )
        assert (
            f"ConfigMap {namespace}/{FLAGS} not found among the ConfigMaps labelled "
            "segue.dev/managed=true" in stalled["Stalled"]["message"]
        )
        assert flags.writes() == []
        flags.label("true")
        wait_until("approval at 30", lambda: rollouts.status("shop"), _awaiting(1), 60)
        assert near(flags.weight(), 30)
        # The label removed: the API server reports the ConfigMap gone from the watch, and
        # the Rollout holds where it is, saying why.
        flags.label(None)
        wait_until(
            "the Rollout to report the ConfigMap unlabelled",
            lambda: rollouts.status("shop").get("message") or "",
            lambda m: f"ConfigMap {namespace}/{FLAGS} not found among" in m,
            30,
        )
        rollouts.annotate("shop", {"segue.dev/abort": "while unlabelled"})
        wait_until("RollingBack", lambda: rollouts.phase("shop"), lambda p: p == "RollingBack")
        time.sleep(2)
        assert near(flags.weight(), 30)  # not written while unlabelled
        flags.label("true")
        wait_until("RolledBack", lambda: rollouts.phase("shop"), lambda p: p == "RolledBack", 30)
        assert flags.split() == Split(0.0)
    finally:
        flags.watch.stop()


def _awaiting(step: int) -> Any:
    return lambda s: s.get("phase") == "AwaitingApproval" and s.get("step") == step
