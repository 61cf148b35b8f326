"""Helpers shared by the end-to-end tests: waiting, manifests, the operator process and the
traffic simulator, all real processes talking to the real local cluster."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client

from segue import GROUP, PLURAL, VERSION

ROOT = Path(__file__).resolve().parents[2]
SIM_SCRIPT = ROOT / "hack" / "trafficsim.py"
T = TypeVar("T")


def wait_until(what: str, get: Callable[[], T], ok: Callable[[T], bool], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = get()
        if ok(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def deployment(name: str, app: str, replicas: int, version: str | None = None) -> dict[str, Any]:
    labels = {"app": app, "deployment": name, "version": version or name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }


def httproute(name: str, legacy: str, new: str, legacy_weight: int = 100) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": legacy, "port": 80, "weight": legacy_weight},
                        {"name": new, "port": 80, "weight": 100 - legacy_weight},
                    ]
                }
            ],
        },
    }


def apply(kube: Any, namespace: str, *docs: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


class Rollouts:
    """Reads of Rollouts and HTTPRoutes in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def get(self, name: str) -> dict[str, Any]:
        obj: Any = self.objects.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return dict(obj)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def phase(self, name: str) -> str | None:
        return self.status(name).get("phase")

    def annotate(self, name: str, annotations: dict[str, str | None]) -> None:
        self.objects.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"metadata": {"annotations": annotations}}
        )

    def route_weights(self, route: str) -> tuple[int, int]:
        obj: Any = self.objects.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", route
        )
        refs = obj["spec"]["rules"][0]["backendRefs"]
        return int(refs[0].get("weight", 1)), int(refs[1].get("weight", 1))

    def new_weight(self, route: str) -> int:
        return self.route_weights(route)[1]

    def replicas(self, name: str) -> tuple[int, int]:
        """(spec.replicas, readyReplicas) of a Deployment."""
        d = self.apps.read_namespaced_deployment(name, self.namespace)
        return (d.spec.replicas or 0, (d.status.ready_replicas or 0) if d.status else 0)

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about this Rollout, oldest first."""
        items = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        items.sort(key=lambda e: str(e.metadata.creation_timestamp))
        return [(e.type or "", e.reason or "", e.message or "") for e in items]


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    liveness: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_operator(
    kubeconfig: str,
    namespace: str,
    log_path: Path,
    prometheus: str | None = None,
    extra: list[str] | None = None,
) -> OperatorProcess:
    """`python -m segue` watching one namespace (tests run side by side on one cluster)."""
    port = free_port()
    liveness = f"http://127.0.0.1:{port}/healthz"
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    argv = [sys.executable, "-m", "segue", "--namespace", namespace, "--liveness", liveness]
    argv += ["--metrics-port", "0"]
    if prometheus:
        argv += ["--prometheus-address", prometheus]
    argv += extra or []
    out = log_path.open("ab")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    op = OperatorProcess(proc, log_path, liveness)

    def alive() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"operator exited with {proc.returncode}:\n{op.log()[-4000:]}")
        try:
            with urllib.request.urlopen(liveness, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_until("the operator's liveness endpoint", alive, bool, timeout=60)
    return op


@dataclass
class Sim:
    proc: subprocess.Popen[str]
    host_port: str
    app: str

    @property
    def base(self) -> str:
        return f"http://{self.host_port}"

    def config(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/config", timeout=5) as r:
            body: dict[str, Any] = json.load(r)
        return body

    def put(self, patch: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.base}/config", data=json.dumps(patch).encode(), method="PUT"
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            body: dict[str, Any] = json.load(r)
        return body

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def start_sim(kubeconfig: str, app: str, *source: str, rate: float = 200.0) -> Sim:
    """hack/trafficsim.py following the live weights; prints its address when ready."""
    proc = subprocess.Popen(
        [
            sys.executable, str(SIM_SCRIPT), "--port", "0", "--app", app,
            "--legacy-version", "v1", "--new-version", "v2", "--rate", str(rate),
            "--legacy-latency-ms", "50", "--new-latency-ms", "50",
            "--kubeconfig", kubeconfig, *source,
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("listening on "):
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"simulator did not start: {line!r}\n{err}")
    return Sim(proc, line.removeprefix("listening on "), app)


class PrivatePrometheus:
    """A Prometheus of one test's own, so the test can stop and start it without touching
    the shared one. Same binary and scrape settings as hack/cluster.py's."""

    def __init__(self, workdir: Path, target: str) -> None:
        import cluster  # hack/cluster.py

        self.binary = cluster.ensure_prometheus()
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: sim\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until("Prometheus ready", ready, bool, timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
