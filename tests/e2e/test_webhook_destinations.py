"""Webhook destinations on the real cluster: a Rollout whose Secret points its webhooks at
loopback (a real receiver on 127.0.0.1), at the cloud metadata address and at a
cluster-internal Service name. Without --allow-internal-webhooks nothing is sent and every
entry gets one Warning Event that names it and says why; with the flag the receiver gets
the notifications, and the metadata address is still refused."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import Rollouts, apply, shop_pair, start_operator, wait_until
from tests.e2e.test_rollout_observability import Receiver, sample

pytestmark = pytest.mark.e2e


def hooks_secret(receiver: Receiver, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hooks"},
        "stringData": {
            "loopback": f"{receiver.url}/loopback",
            "metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "service": f"http://hooks.{namespace}.svc.cluster.local:8080/hook",
        },
    }


def rollout() -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "shop"},
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
            "steps": [{"setWeight": 50}, {"approval": {}}],
            "notifications": [
                {"secretRef": {"name": "hooks", "key": "loopback"}},
                {"secretRef": {"name": "hooks", "key": "metadata"}},
                {"secretRef": {"name": "hooks", "key": "service"}},
            ],
        },
    }


def refusals(rollouts: Rollouts) -> list[str]:
    return [m for _, reason, m in rollouts.events("shop") if reason == "NotificationRefused"]


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return sample(r.read().decode(), name, {}) or 0.0


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()


def test_internal_and_metadata_webhooks_are_refused_and_reported(
    kube, namespace, crds, receiver, tmp_path: Path
):
    apply(kube, namespace, hooks_secret(receiver, namespace))
    rollouts = shop_pair(kube, namespace, replicas=1)
    op = start_operator(kube.kubeconfig, tmp_path / "op.log", [namespace])
    try:
        apply(kube, namespace, rollout())
        wait_until("approval", lambda: rollouts.phase("shop"), lambda p: p == "AwaitingApproval")
        messages = wait_until("three refusals", lambda: refusals(rollouts), lambda m: len(m) == 3)
        for m in messages:
            print("Event NotificationRefused:", m)
        by_entry = {m.split(" ")[0]: m for m in messages}
        assert by_entry["spec.notifications[0].secretRef"] == (
            "spec.notifications[0].secretRef (Secret hooks, key loopback): nothing is sent to "
            "http://127.0.0.1/...: 127.0.0.1 is a loopback address; allowed only when the "
            "operator runs with --allow-internal-webhooks or --allow-webhook-host=127.0.0.1"
        )
        assert by_entry["spec.notifications[1].secretRef"] == (
            "spec.notifications[1].secretRef (Secret hooks, key metadata): nothing is sent to "
            "http://169.254.169.254/...: 169.254.169.254 is a link-local address, where cloud "
            "metadata services live; allowed only when the operator runs with "
            "--allow-webhook-host=169.254.169.254"
        )
        service = f"hooks.{namespace}.svc.cluster.local"
        assert by_entry["spec.notifications[2].secretRef"] == (
            "spec.notifications[2].secretRef (Secret hooks, key service): nothing is sent to "
            f"http://{service}/...: {service} is a cluster-internal or private name; allowed "
            "only when the operator runs with --allow-internal-webhooks or "
            f"--allow-webhook-host={service}"
        )
        # Every notification to them counts as failed.
        wait_until(
            "refusals counted",
            lambda: metric(op.metrics_port, "segue_notifications_failed_total"),
            lambda v: v >= 3,
        )

        rollouts.annotate("shop", {"segue.dev/approve": "1"})
        wait_until("Succeeded", lambda: rollouts.phase("shop"), lambda p: p == "Succeeded")
        wait_until(
            "the Succeeded notifications refused",
            lambda: metric(op.metrics_port, "segue_notifications_failed_total"),
            lambda v: v >= 6,
        )
        # Reported once per entry, not at every phase change; the receiver got nothing.
        assert len(refusals(rollouts)) == 3
        assert receiver.received == {}
        assert "not sending to http://169.254.169.254/..." in op.log()
    finally:
        op.stop()
        print(op.log()[-3000:])


def test_with_the_flag_internal_webhooks_are_delivered_but_metadata_is_not(
    kube, namespace, crds, receiver, tmp_path: Path
):
    apply(kube, namespace, hooks_secret(receiver, namespace))
    rollouts = shop_pair(kube, namespace, replicas=1)
    op = start_operator(
        kube.kubeconfig,
        tmp_path / "op.log",
        [namespace],
        extra_args=["--allow-internal-webhooks"],
    )
    try:
        apply(kube, namespace, rollout())
        wait_until("approval", lambda: rollouts.phase("shop"), lambda p: p == "AwaitingApproval")
        kinds = wait_until(
            "notifications on loopback",
            lambda: [b.get("event") for b in receiver.received.get("/loopback", [])],
            lambda k: "ApprovalNeeded" in k,
        )
        print("delivered to 127.0.0.1:", kinds)
        messages = wait_until("one refusal", lambda: refusals(rollouts), lambda m: len(m) >= 1)
        assert len(messages) == 1
        assert messages[0].startswith(
            "spec.notifications[1].secretRef (Secret hooks, key metadata): nothing is sent to "
            "http://169.254.169.254/...: 169.254.169.254 is a link-local address"
        )
    finally:
        op.stop()
        print(op.log()[-3000:])
