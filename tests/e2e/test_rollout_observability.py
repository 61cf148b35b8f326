"""What the operator tells the outside: webhook notifications to a real HTTP receiver,
and its own /metrics, while it drives a real Rollout."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.support import (
    apply,
    shop_pair,
    start_operator,
    wait_until,
)

pytestmark = pytest.mark.e2e


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


class Receiver:
    """A webhook receiver on 127.0.0.1 that records JSON bodies per path."""

    def __init__(self) -> None:
        self.received: dict[str, list[Any]] = {}
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                if self.path == "/broken":
                    self.send_response(500)
                else:
                    received.setdefault(self.path, []).append(body)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_notifications_and_metrics_follow_a_rollout(
    kube, namespace, crds, receiver, tmp_path: Path
):
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hooks"},
        "stringData": {
            "json": f"{receiver.url}/json",
            "slack": f"{receiver.url}/slack",
            "broken": f"{receiver.url}/broken",
        },
    }
    apply(kube, namespace, secret)
    rollouts = shop_pair(kube, namespace, replicas=1)
    # The receiver is on loopback, an internal destination the operator refuses by default.
    op = start_operator(
        kube.kubeconfig,
        tmp_path / "op.log",
        [namespace],
        extra_args=["--allow-internal-webhooks"],
    )
    port = op.metrics_port
    try:
        rollout = {
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
                    {"secretRef": {"name": "hooks", "key": "broken"}},
                    {"secretRef": {"name": "hooks", "key": "json"}, "format": "json"},
                    {
                        "secretRef": {"name": "hooks", "key": "slack"},
                        "format": "slack",
                        "events": ["ApprovalNeeded", "Succeeded"],
                    },
                ],
            },
        }
        apply(kube, namespace, rollout)
        wait_until("approval", lambda: rollouts.phase("shop"), lambda p: p == "AwaitingApproval")

        def metrics() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return str(r.read().decode())

        mine = {"namespace": namespace, "rollout": "shop"}
        text = wait_until(
            "weight 50 in metrics",
            metrics,
            lambda t: sample(t, "segue_rollout_weight", mine) == 50,
        )
        assert sample(text, "segue_rollout_phase", {**mine, "phase": "AwaitingApproval"}) == 1
        assert sample(text, "segue_rollout_phase", {**mine, "phase": "Progressing"}) == 0
        assert (sample(text, "segue_reconcile_duration_seconds_count", {"result": "ok"}) or 0) > 0

        rollouts.annotate("shop", {"segue.dev/approve": "1"})
        wait_until("Succeeded", lambda: rollouts.phase("shop"), lambda p: p == "Succeeded")
        kinds = wait_until(
            "notifications",
            lambda: [b.get("event") for b in receiver.received.get("/json", [])],
            lambda k: "ApprovalNeeded" in k and "Succeeded" in k,
            30,
        )
        first = receiver.received["/json"][0]
        assert first["kind"] == "Notification" and first["rollout"] == "shop"
        assert "PhaseChanged" in kinds or "Progressing" in str(receiver.received["/json"])
        slack = wait_until(
            "slack messages", lambda: receiver.received.get("/slack", []), lambda m: len(m) >= 2
        )
        assert all("text" in m for m in slack) and "shop" in slack[0]["text"]
        # A failing receiver did not hold anything up.
        assert rollouts.status("shop")["phase"] == "Succeeded"
    finally:
        op.stop()
        print(op.log()[-3000:])
