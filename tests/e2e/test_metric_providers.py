"""Credentials go only where a platform team allowed: against the real API server and the
real Prometheus.

- an inline address the operator does not allow gets no request at all (so no token), and
  the Rollout is Failed before traffic moves, with the field and the fix named;
- a Rollout naming a MetricProvider waits (Stalled, a Warning Event) until the provider
  exists, then runs its gates against the provider's address with the provider's token,
  read from the Secret in the provider's namespace;
- a server that answers garbage at an allowed address yields a fixed summary in status,
  nothing of the reply.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from segue_testkit.scenario import rollout
from tests.e2e.support import apply, shop_pair, start_operator, wait_until

pytestmark = pytest.mark.e2e

GARBAGE = b"INTERNAL-SERVICE-REPLY " + b"x" * 2000
GATES = [{"name": "errors", "query": "vector(0.01)", "max": 0.05}]


@dataclass
class Recorder:
    """A loopback HTTP server recording every request; it answers ``GARBAGE`` (200), or
    forwards to ``upstream`` when set (a recording proxy in front of Prometheus)."""

    upstream: str | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with _serve(Recorder()) as state:
        yield state


@contextlib.contextmanager
def _serve(state: Recorder) -> Iterator[Recorder]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, dict(self.headers)))
            status, body = 200, GARBAGE
            if state.upstream is not None:
                with urllib.request.urlopen(state.upstream + self.path, timeout=5) as r:
                    status, body = r.status, r.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def secret(name: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"token": token},
    }


@pytest.fixture
def provider_namespace(kube: Any) -> Iterator[str]:
    """The platform team's namespace, holding the MetricProvider's Secret."""
    name = f"platform-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube.api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def provider_name(kube: Any) -> Iterator[str]:
    """A unique MetricProvider name (cluster-scoped), deleted afterwards."""
    name = f"prov-{uuid.uuid4().hex[:8]}"
    yield name
    kube.kubectl("delete", "metricprovider", name, "--ignore-not-found", "--wait=false")


def test_a_non_allowed_inline_address_gets_no_request_and_the_rollout_fails_before_traffic(
    kube, namespace, crds, operator, recorder
):
    rollouts = shop_pair(kube, namespace)
    apply(kube, namespace, secret("prom-token", "tenant-token"))
    prometheus = {"address": recorder.url, "secretRef": {"name": "prom-token"}}
    analysis = {"interval": "1s", "prometheus": prometheus, "gates": GATES}
    apply(kube, namespace, rollout("shop", steps=[{"setWeight": 50}], analysis=analysis))

    wait_until("Failed", lambda: rollouts.phase("shop"), lambda p: p == "Failed", 60)
    status = rollouts.status("shop")
    print("status.message:", status["message"])
    assert status["message"] == (
        f"invalid spec: spec.analysis.prometheus.address: {recorder.url} is not an address "
        "this operator may query; name a MetricProvider in spec.analysis.providerRef "
        "instead, or ask the platform team to allow the address (--allow-prometheus-address)"
    )
    assert status.get("weight", 0) == 0 and rollouts.new_weight("shop") == 0
    events = wait_until(
        "a Failed Event",
        lambda: rollouts.events("shop"),
        lambda evs: any(
            t == "Warning" and r == "Failed" and "spec.analysis.prometheus.address" in m
            for t, r, m in evs
        ),
        30,
    )
    print("events:", events)
    # The operator had every chance to query it: nothing was sent, so no token either.
    wait_until("a few passes", lambda: rollouts.phase("shop"), lambda p: p == "Failed", 5)
    assert recorder.requests == []
    assert "INTERNAL-SERVICE-REPLY" not in str(rollouts.status("shop"))


def test_a_metric_provider_brings_the_platform_token_and_the_gates_evaluate(
    kube, namespace, crds, operator, prometheus, provider_namespace, provider_name
):
    state = Recorder(upstream=prometheus.url)
    with _serve(state) as proxy:
        rollouts = shop_pair(kube, namespace)
        # A Secret of the same name in the Rollout's namespace must not be what is read.
        apply(kube, namespace, secret("prom-token", "tenant-token"))
        apply(kube, provider_namespace, secret("prom-token", "platform-token"))
        analysis = {"interval": "1s", "providerRef": {"name": provider_name}, "gates": GATES}
        plan = [{"setWeight": 20}, {"pause": {"duration": "2s"}}]
        apply(kube, namespace, rollout("shop", steps=plan, analysis=analysis))

        # No MetricProvider yet: the start is held, and the field and provider are named.
        missing = f"MetricProvider {provider_name} named in spec.analysis.providerRef"
        wait_until(
            "Stalled",
            lambda: rollouts.status("shop").get("message", ""),
            lambda m: missing in m,
            60,
        )
        status = rollouts.status("shop")
        print("while missing:", status["phase"], status["message"])
        assert status["phase"] == "Pending" and rollouts.new_weight("shop") == 0
        stalled = [c for c in status["conditions"] if c["type"] == "Stalled"]
        assert stalled and stalled[0]["status"] == "True"
        wait_until(
            "a MissingReference Event",
            lambda: rollouts.events("shop"),
            lambda evs: any(
                t == "Warning" and r == "MissingReference" and missing in m for t, r, m in evs
            ),
            30,
        )

        # The platform team declares it: its creation wakes the Rollout.
        provider = {
            "apiVersion": "segue.dev/v1alpha1",
            "kind": "MetricProvider",
            "metadata": {"name": provider_name},
            "spec": {
                "prometheus": {
                    "address": proxy.url,
                    "timeout": "5s",
                    "secretRef": {"namespace": provider_namespace, "name": "prom-token"},
                }
            },
        }
        apply(kube, namespace, provider)
        listed = kube.kubectl("get", "metricproviders", provider_name).stdout
        print(listed)
        assert proxy.url in listed
        wait_until("Succeeded", lambda: rollouts.phase("shop"), lambda p: p == "Succeeded", 120)
        gates = rollouts.status("shop")["gates"]
        assert gates[0]["verdict"] == "Pass" and gates[0]["value"] == pytest.approx(0.01)
        auth = {h.get("Authorization") for _, h in proxy.requests}
        assert auth == {"Bearer platform-token"}, auth
        assert all(path.startswith("/api/v1/query") for path, _ in proxy.requests)


def test_garbage_from_an_allowed_address_is_a_fixed_summary_in_status(
    kube, namespace, crds, prometheus, recorder, tmp_path: Path
):
    op = start_operator(
        kube.kubeconfig,
        tmp_path / "operator.log",
        [namespace],
        prometheus=prometheus.url,
        extra_args=["--allow-prometheus-address", recorder.url],
    )
    try:
        rollouts = shop_pair(kube, namespace)
        analysis = {"interval": "1s", "prometheus": {"address": recorder.url}, "gates": GATES}
        plan = [{"setWeight": 10}, {"approval": {}}]
        apply(kube, namespace, rollout("shop", steps=plan, analysis=analysis))

        def gate_message() -> str:
            gates = rollouts.status("shop").get("gates") or [{}]
            return str(gates[0].get("message", ""))

        wait_until("a gate message", gate_message, bool, 90)
        status = rollouts.status("shop")
        print("gates:", status["gates"], "message:", status.get("message"))
        assert gate_message() == (
            f"Prometheus unavailable for gate errors: Prometheus at {recorder.url} did not "
            "answer like Prometheus (HTTP 200, not a Prometheus API reply)"
        )
        assert recorder.requests  # it was asked (the address is allowed) ...
        assert "INTERNAL-SERVICE-REPLY" not in str(status)  # ... and nothing of it is shown
        assert "xxxx" not in str(status)
    finally:
        op.stop()
        print(f"--- operator log ---\n{op.log()[-4000:]}")
