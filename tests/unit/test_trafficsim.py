"""The traffic simulator: synthesis arithmetic, weight sources, control API, process."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from segue_testkit.trafficsim.cli import build_source, parse_args
from segue_testkit.trafficsim.config import Behaviour, SimConfig, apply_patch
from segue_testkit.trafficsim.metrics import Metrics
from segue_testkit.trafficsim.simulator import Simulator
from segue_testkit.trafficsim.sources import Split
from segue_testkit.trafficsim.sources.gatewayapi import weight_from_httproute
from segue_testkit.trafficsim.sources.replicas import weight_from_ready
from segue_testkit.trafficsim.synthesizer import Batch, Synthesizer

SIMULATOR = [sys.executable, "-m", "segue_testkit.trafficsim"]


def run_for(
    synth: Synthesizer, seconds: float, weight: float | None, config: SimConfig, dt: float = 0.1
):
    totals: dict[str, list[int]] = {"legacy": [0, 0], "new": [0, 0]}
    latencies: dict[str, list[float]] = {"legacy": [], "new": []}
    for _ in range(round(seconds / dt)):
        for b in synth.step(dt, Split(weight), config):
            totals[b.version][0] += b.requests
            totals[b.version][1] += b.errors
            assert len(b.latencies_s) == b.requests
            latencies[b.version].extend(b.latencies_s)
    return totals, latencies


def test_counts_follow_rate_weight_and_error_rate_exactly():
    config = SimConfig(
        rate=200, legacy=Behaviour(0.0, 50), new=Behaviour(error_rate=0.1, latency_ms=300)
    )
    totals, latencies = run_for(Synthesizer(seed=1), 10, 25.0, config)
    assert abs(totals["new"][0] - 500) <= 1
    assert abs(totals["legacy"][0] - 1500) <= 1
    assert abs(totals["new"][1] - 50) <= 1
    assert totals["legacy"][1] == 0
    mean_new = sum(latencies["new"]) / len(latencies["new"])
    mean_legacy = sum(latencies["legacy"]) / len(latencies["legacy"])
    assert mean_new == pytest.approx(0.3, rel=0.05)
    assert mean_legacy == pytest.approx(0.05, rel=0.05)


def test_fractions_carry_over_small_shares():
    # 1 % of 200 rps is 2 rps: 0.2 requests per tick, still exact over time.
    totals, _ = run_for(Synthesizer(), 10, 1.0, SimConfig(rate=200), dt=0.1)
    assert abs(totals["new"][0] - 20) <= 1


def test_uneven_ticks_keep_the_rate():
    synth = Synthesizer()
    config = SimConfig(rate=100)
    total = 0
    for dt in [0.05, 0.13, 0.31, 0.01, 0.5] * 20:
        total += sum(b.requests for b in synth.step(dt, Split(50.0), config))
    # Both versions together receive the whole rate.
    assert abs(total - 100 * sum([0.05, 0.13, 0.31, 0.01, 0.5] * 20)) <= 2


@pytest.mark.parametrize("weight", [0.0, None])
def test_no_share_no_requests(weight):
    totals, _ = run_for(Synthesizer(), 5, weight, SimConfig())
    assert totals["new"] == [0, 0]
    if weight is None:
        assert totals["legacy"] == [0, 0]


def test_full_weight_sends_everything_to_new():
    totals, _ = run_for(Synthesizer(), 5, 100.0, SimConfig(rate=50))
    assert totals["legacy"] == [0, 0] and abs(totals["new"][0] - 250) <= 1


def test_latency_is_positive_and_zero_mean_is_zero():
    synth = Synthesizer(seed=3)
    assert all(x > 0 for x in synth.latencies(1000, 10))
    assert synth.latencies(3, 0) == (0.0, 0.0, 0.0)


def test_weight_from_httproute():
    route = {
        "spec": {
            "rules": [
                {
                    "backendRefs": [
                        {"name": "checkout-v1", "port": 80, "weight": 90},
                        {"name": "checkout-v2", "port": 80, "weight": 10},
                    ]
                },
                {"backendRefs": [{"name": "checkout-v2"}]},
            ]
        }
    }
    assert weight_from_httproute(route, "checkout-v1", "checkout-v2") == 10.0
    # Weight defaults to 1; the legacy backend is absent from rule 1.
    assert weight_from_httproute(route, "checkout-v1", "checkout-v2", 1) == 100.0
    zero = {"spec": {"rules": [{"backendRefs": [{"name": "checkout-v1", "weight": 0}]}]}}
    assert weight_from_httproute(zero, "checkout-v1", "checkout-v2") is None
    only_legacy = {"spec": {"rules": [{"backendRefs": [{"name": "checkout-v1"}]}]}}
    assert weight_from_httproute(only_legacy, "checkout-v1", "checkout-v2") == 0.0
    with pytest.raises(ValueError, match="no rule 3"):
        weight_from_httproute(route, "checkout-v1", "checkout-v2", 3)


def test_weight_from_ready_replicas():
    assert weight_from_ready(3, 1) == 25.0
    assert weight_from_ready(0, 2) == 100.0
    assert weight_from_ready(0, 0) is None


def test_config_patch():
    config = apply_patch(SimConfig(), {"new": {"errorRate": 0.2, "latencyMs": 300}})
    assert config.new == Behaviour(0.2, 300) and config.legacy == Behaviour()
    config = apply_patch(config, {"rate": 50, "legacy": {"latencyMs": 80}})
    assert config.rate == 50 and config.legacy == Behaviour(0.0, 80)
    assert config.new == Behaviour(0.2, 300)
    assert config.to_json() == {
        "rate": 50.0,
        "legacy": {"errorRate": 0.0, "latencyMs": 80.0, "throughput": 1.0},
        "new": {"errorRate": 0.2, "latencyMs": 300.0, "throughput": 1.0},
    }
    config = apply_patch(config, {"new": {"throughput": 0.5}})
    assert config.new == Behaviour(0.2, 300, throughput=0.5) and config.legacy.throughput == 1.0


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ([], "JSON object"),
        ({"canary": {}}, "unknown keys"),
        ({"new": {"errorRate": 1.5}}, "between 0 and 1"),
        ({"new": {"errorRate": "high"}}, "must be a number"),
        ({"new": {"errorRate": True}}, "must be a number"),
        ({"new": {"errors": 0.1}}, "unknown keys in new"),
        ({"new": {"throughput": 1.5}}, "new.throughput must be between 0 and 1"),
        ({"legacy": {"throughput": -0.1}}, "legacy.throughput must be between 0 and 1"),
        ({"new": {"throughput": "half"}}, "new.throughput must be a number"),
        ({"rate": -1}, "rate"),
        ({"rate": math.nan}, "rate"),
        ({"new": 0.3}, "must be an object"),
    ],
)
def test_bad_patches(patch, message):
    with pytest.raises(ValueError, match=message):
        apply_patch(SimConfig(), patch)


def test_metrics_exposition_has_no_series_for_idle_versions():
    metrics = Metrics("checkout", {"legacy": "v1", "new": "v2"})
    metrics.record(Batch("legacy", 10, 2, (0.05,) * 10))
    text = metrics.exposition().decode()
    assert 'http_requests_total{app="checkout",code="200",version="v1"} 8.0' in text
    assert 'http_requests_total{app="checkout",code="500",version="v1"} 2.0' in text
    assert 'http_request_duration_seconds_count{app="checkout",version="v1"} 10.0' in text
    assert 'version="v2"' not in text


# --- the process -----------------------------------------------------------------------------


def http(method: str, url: str, body: object | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def test_process_serves_metrics_and_config_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [*SIMULATOR, "--port", "0", "--app", "checkout",
         "--legacy-version", "v1", "--new-version", "v2", "--static-weight", "50",
         "--rate", "100", "--new-error-rate", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on 127.0.0.1:")
        base = f"http://{first.removeprefix('listening on ')}"
        status, config = http("GET", f"{base}/config")
        assert status == 200 and config["weight"] == 50.0 and config["new"]["errorRate"] == 0.5
        status, config = http("PUT", f"{base}/config", {"new": {"errorRate": 0.0}})
        assert status == 200 and config["new"]["errorRate"] == 0.0
        status, config = http("PUT", f"{base}/config", {"new": {"throughput": 0.5}})
        assert status == 200 and config["new"]["throughput"] == 0.5
        assert config["legacy"]["throughput"] == 1.0
        status, err = http("PUT", f"{base}/config", {"new": {"errorRate": 7}})
        assert status == 400 and "between 0 and 1" in err["error"]
        status, _ = http("PUT", f"{base}/config", None)
        assert status == 200
        time.sleep(0.5)
        status, text = http("GET", f"{base}/metrics")
        assert status == 200
        assert 'http_requests_total{app="checkout",code="200",version="v2"}' in text
        assert 'http_request_duration_seconds_bucket{app="checkout",le="0.05",version="v1"}' in text
        assert "_created" not in text
        assert http("GET", f"{base}/nope")[0] == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        parse_args(["--app", "a", "--legacy-version", "v1", "--new-version", "v2"])
    with pytest.raises(SystemExit):
        parse_args(
            ["--app", "a", "--legacy-version", "v1", "--new-version", "v2", "--httproute", "ns/r"]
        )
    args = parse_args(
        ["--app", "a", "--legacy-version", "v1", "--new-version", "v2",
         "--deployments", "ns/a,ns/b"]
    )  # fmt: skip
    assert args.deployments == "ns/a,ns/b" and args.rate == 200.0


# --- weight sources through the kubernetes client, against a scripted API server ----------


@pytest.fixture
def fake_apiserver(tmp_path):
    """Serves a Deployment pair and an HTTPRoute; returns (kubeconfig path, objects)."""
    objects: dict[str, Any] = {
        "/apis/apps/v1/namespaces/shop/deployments/legacy": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "legacy", "namespace": "shop"},
            "spec": {"replicas": 3},
            "status": {"replicas": 3, "readyReplicas": 3},
        },
        "/apis/apps/v1/namespaces/shop/deployments/new": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "new", "namespace": "shop"},
            "spec": {"replicas": 1},
            "status": {"replicas": 1},
        },
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout": {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {
                "rules": [
                    {
                        "backendRefs": [
                            {"name": "checkout-v1", "port": 80, "weight": 70},
                            {"name": "checkout-v2", "port": 80, "weight": 30},
                        ]
                    }
                ]
            },
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = objects.get(self.path.split("?", 1)[0])
            raw = json.dumps(body or {"kind": "Status", "code": 404}).encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "fake",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"},
                    }
                ],
                "users": [{"name": "fake", "user": {}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    yield str(kubeconfig), objects
    server.shutdown()
    server.server_close()


def test_weight_from_deployments_via_api(fake_apiserver):
    kubeconfig, objects = fake_apiserver
    args = parse_args(
        ["--app", "a", "--legacy-version", "v1", "--new-version", "v2",
         "--deployments", "shop/legacy,shop/new", "--kubeconfig", kubeconfig]
    )  # fmt: skip
    source = build_source(args)
    # The new Deployment reports no readyReplicas at all: that counts as 0.
    assert source.read() == Split(0.0)
    objects["/apis/apps/v1/namespaces/shop/deployments/new"]["status"]["readyReplicas"] = 1
    assert source.read() == Split(25.0)


def test_weight_from_httproute_via_api(fake_apiserver):
    kubeconfig, _ = fake_apiserver
    args = parse_args(
        ["--app", "a", "--legacy-version", "v1", "--new-version", "v2",
         "--httproute", "shop/checkout", "--legacy-backend", "checkout-v1",
         "--new-backend", "checkout-v2", "--kubeconfig", kubeconfig]
    )  # fmt: skip
    source = build_source(args)
    assert source.read() == Split(30.0)
    assert source.describe() == "HTTPRoute shop/checkout rule 0"


def test_unreadable_weight_keeps_the_last_one(fake_apiserver):
    kubeconfig, objects = fake_apiserver
    args = parse_args(
        ["--app", "a", "--legacy-version", "v1", "--new-version", "v2",
         "--httproute", "shop/checkout", "--legacy-backend", "checkout-v1",
         "--new-backend", "checkout-v2", "--kubeconfig", kubeconfig]
    )  # fmt: skip
    sim = Simulator(build_source(args), Metrics("a", {"legacy": "v1", "new": "v2"}),
                       SimConfig())  # fmt: skip
    sim.refresh_weight()
    assert sim.weight == 30.0
    del objects["/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout"]
    sim.refresh_weight()
    assert sim.weight == 30.0
    assert sim.snapshot()["weightError"]
