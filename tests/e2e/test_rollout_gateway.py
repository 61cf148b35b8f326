"""A Rollout on the Gateway API router, driven by the real operator on the local cluster."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.support import (
    Rollouts,
    WeightRecorder,
    apply,
    deployment,
    httproute,
    shop_pair,
    start_operator,
    wait_until,
)

pytestmark = pytest.mark.e2e


def rollout(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "legacy": {"deployment": "shop-v1"},
            "new": {"deployment": "shop-v2"},
            "traffic": {
                "gatewayAPI": {
                    "httpRoute": "shop",
                    "legacyBackend": "shop-v1",
                    "newBackend": "shop-v2",
                }
            },
            **spec,
        },
    }


@pytest.fixture
def workloads(kube: Any, namespace: str, crds: None) -> Rollouts:
    return shop_pair(kube, namespace)


def test_low_risk_preset_walks_every_step_to_succeeded(kube, namespace, workloads, operator):
    recorder = WeightRecorder(workloads, "shop")
    apply(kube, namespace, rollout("shop", risk="low", hold="2s"))
    wait_until("Succeeded", lambda: workloads.phase("shop"), lambda p: p == "Succeeded", 120)
    seen = recorder.stop()
    assert seen == [0, 10, 25, 50, 75, 100]
    assert workloads.route_weights("shop") == (0, 100)
    status = workloads.status("shop")
    confirmed = [h["weight"] for h in status["history"] if h["event"] == "WeightSet"]
    assert confirmed == [10, 25, 50, 75, 100]
    assert status["weight"] == 100 and status["step"] == status["totalSteps"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert status["observedGeneration"] == workloads.get("shop")["metadata"]["generation"]
    reasons = [reason for _, reason, _ in workloads.events("shop")]
    assert "WeightSet" in reasons and "Succeeded" in reasons
    # kopf's bookkeeping stays under Segue's prefix.
    annotations = workloads.get("shop")["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("kopf.")]


def test_critical_waits_for_approval_of_the_named_step(kube, namespace, workloads, operator):
    apply(kube, namespace, rollout("shop", risk="critical", hold="1s"))
    status = wait_until(
        "AwaitingApproval",
        lambda: workloads.status("shop"),
        lambda s: s.get("phase") == "AwaitingApproval",
        90,
    )
    step = status["step"]
    assert workloads.new_weight("shop") == 25  # critical: approvals from 50 % on
    # An approval for a later step, and a garbage one, change nothing.
    workloads.annotate("shop", {"segue.dev/approve": str(step + 1)})
    wait_until(
        "the wrong approval to be reported",
        lambda: [m for _, r, m in workloads.events("shop") if r == "AnnotationIgnored"],
        lambda found: any(f"step {step + 1} is not the current step" in m for m in found),
    )
    time.sleep(1.5)
    status = workloads.status("shop")
    assert (status["phase"], status["step"]) == ("AwaitingApproval", step)
    assert workloads.new_weight("shop") == 25
    assert "segue.dev/approve" not in (workloads.get("shop")["metadata"].get("annotations") or {})

    workloads.annotate("shop", {"segue.dev/approve": "soon"})
    wait_until(
        "the garbage approval to be reported",
        lambda: [m for _, r, m in workloads.events("shop") if r == "AnnotationIgnored"],
        lambda found: any("must be the index" in m for m in found),
    )
    assert workloads.phase("shop") == "AwaitingApproval"

    workloads.annotate("shop", {"segue.dev/approve": str(step)})
    wait_until("weight 50", lambda: workloads.new_weight("shop"), lambda w: w == 50, 30)
    status = wait_until(
        "the next approval",
        lambda: workloads.status("shop"),
        lambda s: s.get("phase") == "AwaitingApproval" and s["step"] > step,
        30,
    )
    approved = [h for h in status["history"] if h["event"] == "Approved"]
    assert [h["actor"] for h in approved] == ["segue.dev/approve"]


def test_abort_midway_returns_all_traffic_to_legacy(kube, namespace, workloads, operator):
    apply(kube, namespace, rollout("shop", steps=[{"setWeight": 30}, {"pause": {}}]))
    wait_until("paused at 30", lambda: workloads.phase("shop"), lambda p: p == "AwaitingApproval")
    assert workloads.new_weight("shop") == 30
    workloads.annotate("shop", {"segue.dev/abort": "checkout errors reported by support"})
    wait_until("RolledBack", lambda: workloads.phase("shop"), lambda p: p == "RolledBack", 30)
    assert workloads.route_weights("shop") == (100, 0)
    status = workloads.status("shop")
    aborted = [h for h in status["history"] if h["event"] == "Aborted"]
    assert aborted and "checkout errors reported by support" in aborted[0]["reason"]


def test_operator_restart_resumes_at_the_same_step(kube, namespace, workloads, crds, tmp_path):
    steps = [
        {"setWeight": 10},
        {"pause": {"duration": "1s"}},
        {"setWeight": 20},
        {"approval": {}},
        {"setWeight": 60},
        {"pause": {"duration": "1s"}},
    ]
    first = start_operator(kube.kubeconfig, tmp_path / "op1.log", [namespace])
    try:
        apply(kube, namespace, rollout("shop", steps=steps))
        wait_until("approval", lambda: workloads.phase("shop"), lambda p: p == "AwaitingApproval")
    finally:
        first.stop(sig=9)  # killed, not shut down: no chance to tidy up
    before = workloads.status("shop")
    assert before["step"] == 3 and workloads.new_weight("shop") == 20

    second = start_operator(kube.kubeconfig, tmp_path / "op2.log", [namespace])
    try:
        # It leads once the killed operator's Lease has expired (up to 14 s), and only then
        # may it act at all.
        wait_until("the second operator to lead", lambda: "became leader" in second.log(), bool, 30)
        time.sleep(3)  # a restarted operator must not repeat or skip anything by itself
        after = workloads.status("shop")
        assert (after["phase"], after["step"]) == ("AwaitingApproval", 3)
        assert len(after["history"]) == len(before["history"])
        workloads.annotate("shop", {"segue.dev/approve": "3"})
        wait_until("Succeeded", lambda: workloads.phase("shop"), lambda p: p == "Succeeded", 60)
    finally:
        second.stop()
    history = workloads.status("shop")["history"]
    confirmed = [h["weight"] for h in history if h["event"] == "WeightSet"]
    assert confirmed == [10, 20, 60, 100]  # each step once, none repeated


def test_delete_unfinished_returns_traffic_finished_keeps_it(kube, namespace, workloads, operator):
    apply(kube, namespace, rollout("shop", steps=[{"setWeight": 40}, {"approval": {}}]))
    wait_until("weight 40", lambda: workloads.new_weight("shop"), lambda w: w == 40)
    kube.kubectl("delete", "-n", namespace, "rollout.segue.dev/shop", "--timeout=60s")
    assert workloads.route_weights("shop") == (100, 0)

    apply(kube, namespace, rollout("done", steps=[{"setWeight": 100}]))
    wait_until("Succeeded", lambda: workloads.phase("done"), lambda p: p == "Succeeded")
    kube.kubectl("delete", "-n", namespace, "rollout.segue.dev/done", "--timeout=60s")
    assert workloads.route_weights("shop") == (0, 100)


def test_missing_route_is_reported_and_retried(kube, namespace, crds, operator):
    rollouts = Rollouts(kube.api_client, namespace)
    apply(kube, namespace, deployment("shop-v1", "shop", 1), deployment("shop-v2", "shop", 1))
    apply(kube, namespace, rollout("shop", steps=[{"setWeight": 50}]))
    stalled = wait_until(
        "a Stalled condition",
        lambda: {c["type"]: c for c in rollouts.status("shop").get("conditions", [])},
        lambda c: c.get("Stalled", {}).get("status") == "True",
    )
    assert "HTTPRoute" in stalled["Stalled"]["message"]
    # The Event is posted just after the status write that set the condition.
    wait_until(
        "a MissingReference Event",
        lambda: [r for _, r, _ in rollouts.events("shop")],
        lambda reasons: "MissingReference" in reasons,
        10,
    )
    apply(kube, namespace, httproute("shop", "shop-v1", "shop-v2"))
    wait_until("Succeeded", lambda: rollouts.phase("shop"), lambda p: p == "Succeeded", 90)


def test_no_traffic_goes_to_a_version_without_ready_pods(kube, namespace, crds, operator):
    rollouts = Rollouts(kube.api_client, namespace)
    apply(
        kube,
        namespace,
        deployment("shop-v1", "shop", 1),
        deployment("shop-v2", "shop", 0),
        httproute("shop", "shop-v1", "shop-v2"),
    )
    apply(kube, namespace, rollout("shop", steps=[{"setWeight": 50}]))
    status = wait_until(
        "the wait to be explained",
        lambda: rollouts.status("shop"),
        lambda s: "waiting for ready pods of Deployment shop-v2" in (s.get("message") or ""),
    )
    assert status["phase"] == "Progressing"
    time.sleep(2)
    assert rollouts.new_weight("shop") == 0
    kube.kubectl("scale", "-n", namespace, "deployment/shop-v2", "--replicas=1")
    wait_until("Succeeded", lambda: rollouts.phase("shop"), lambda p: p == "Succeeded", 60)
    assert rollouts.route_weights("shop") == (0, 100)
