"""Webhook targets read from a Rollout's Secrets: refused ones are reported as one Warning
Event per entry and reason; the operator's flags reach the rules."""

from __future__ import annotations

import asyncio
from typing import Any

from segue.api.spec import RolloutSpec
from segue.controller.main import parse_args
from segue.controller.notifications import WebhookTargets
from segue.notify import Notification, WebhookTarget
from segue.notify.destinations import Destinations

ROLLOUT = {
    "apiVersion": "segue.dev/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "shop", "namespace": "team", "uid": "u-1", "labels": {"a": "b"}},
}


class FakeSecrets:
    def __init__(self, data: dict[str, str]) -> None:
        self.data = data

    async def read(self, namespace: str, name: str) -> dict[str, str]:
        return dict(self.data)


def spec(*keys: str) -> RolloutSpec:
    return RolloutSpec.model_validate(
        {
            "legacy": {"deployment": "v1"},
            "new": {"deployment": "v2"},
            "traffic": {"replicas": {}},
            "risk": "low",
            "notifications": [{"secretRef": {"name": "hooks", "key": k}} for k in keys],
        }
    )


HOOKS = {
    "public": "https://hooks.example.com/T0/B0/secret",
    "loopback": "http://127.0.0.1:9/x",
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "service": "http://alerts.monitoring.svc.cluster.local:8080/hook",
}


def targets(destinations: Destinations | None = None) -> tuple[WebhookTargets, list[Any]]:
    events: list[Any] = []
    t = WebhookTargets(
        FakeSecrets(HOOKS),  # type: ignore[arg-type]
        ttl=0.0,
        destinations=destinations,
        post_event=lambda obj, *rest: events.append((obj, *rest)),
    )
    return t, events


def test_refused_targets_are_reported_once() -> None:
    t, events = targets()
    s = spec("public", "loopback", "metadata", "service")
    for _ in range(3):  # a stale cache is read again: no second Event
        assert asyncio.run(t.refresh("team", "shop", s, ROLLOUT)) == []
    # Kept, for the dispatcher to refuse (and count) each notification they miss.
    assert len(t.targets_for("team", "shop")) == 4
    assert [e[1:3] for e in events] == [("Warning", "NotificationRefused")] * 3
    ref = events[0][0]
    assert ref == {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "shop", "namespace": "team", "uid": "u-1"},
    }
    messages = [e[3] for e in events]
    assert messages[0] == (
        "spec.notifications[1].secretRef (Secret hooks, key loopback): nothing is sent to "
        "http://127.0.0.1/...: 127.0.0.1 is a loopback address; allowed only when the "
        "operator runs with --allow-internal-webhooks or --allow-webhook-host=127.0.0.1"
    )
    assert messages[1].startswith(
        "spec.notifications[2].secretRef (Secret hooks, key metadata): nothing is sent to "
        "http://169.254.169.254/...: 169.254.169.254 is a link-local address"
    )
    assert messages[2].startswith("spec.notifications[3].secretRef (Secret hooks, key service)")
    assert "cluster-internal" in messages[2]
    # The URL's path (its credential) is never in an Event.
    assert not any(path in m for m in messages for path in ("/latest", "/hook", "/x"))


def test_internal_targets_pass_when_allowed_but_metadata_only_when_named() -> None:
    t, events = targets(Destinations.of(allow_internal=True))
    asyncio.run(t.refresh("team", "shop", spec("loopback", "metadata", "service"), ROLLOUT))
    assert len(events) == 1 and "169.254.169.254" in events[0][3]
    t, events = targets(Destinations.of(allow_hosts=["169.254.169.254"]))
    asyncio.run(t.refresh("team", "shop", spec("metadata"), ROLLOUT))
    assert [x.host for x in t.targets_for("team", "shop")] == ["169.254.169.254"]
    assert events == []


def test_a_refusal_at_connect_time_is_reported_once_per_entry_and_reason() -> None:
    t, events = targets()
    asyncio.run(t.refresh("team", "shop", spec("public"), ROLLOUT))
    (target,) = t.targets_for("team", "shop")
    refusal = Destinations().check_address(target.host, "10.0.0.7")
    assert refusal is not None
    n = Notification("PhaseChanged", "team", "shop", "Progressing", 0, 10, "", None)  # type: ignore[arg-type]
    for _ in range(5):
        t.on_refused(n, target, refusal)
    assert len(events) == 1
    assert events[0][3] == (
        "spec.notifications[0].secretRef (Secret hooks, key public): nothing is sent to "
        "https://hooks.example.com/...: hooks.example.com resolves to 10.0.0.7, a private "
        "address; allowed only when the operator runs with --allow-internal-webhooks or "
        "--allow-webhook-host=hooks.example.com"
    )
    # Forgotten with the Rollout: a Rollout of the same name is told again.
    t.forget("team", "shop")
    asyncio.run(t.refresh("team", "shop", spec("public"), ROLLOUT))
    t.on_refused(n, target, refusal)
    assert len(events) == 2


def test_targets_name_their_entry_and_share_a_lane_across_rollouts() -> None:
    a = WebhookTarget.of(HOOKS["public"], source="spec.notifications[0].secretRef")
    b = WebhookTarget.of(HOOKS["public"], source="spec.notifications[3].secretRef")
    assert a == b and hash(a) == hash(b) and a.source != b.source


def test_flags_reach_the_rules(monkeypatch: Any) -> None:
    monkeypatch.delenv("SEGUE_ALLOW_INTERNAL_WEBHOOKS", raising=False)
    monkeypatch.delenv("SEGUE_WEBHOOK_PROXY", raising=False)
    args = parse_args([])
    assert (args.allow_internal_webhooks, args.allow_webhook_host, args.webhook_proxy) == (
        False,
        [],
        None,
    )
    args = parse_args(
        [
            "--allow-internal-webhooks",
            "--allow-webhook-host",
            "169.254.169.254",
            "--allow-webhook-host=*.corp.example",
            "--webhook-proxy",
            "http://proxy.infra:3128",
        ]
    )
    assert args.allow_internal_webhooks and args.webhook_proxy == "http://proxy.infra:3128"
    assert args.allow_webhook_host == ["169.254.169.254", "*.corp.example"]
    monkeypatch.setenv("SEGUE_ALLOW_INTERNAL_WEBHOOKS", "true")
    assert parse_args([]).allow_internal_webhooks is True
