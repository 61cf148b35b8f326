"""Building blocks of the demo and the rollback benchmark: a namespace with a legacy and a
new Deployment behind an HTTPRoute, the traffic simulator following that route and scraped
by Prometheus, and the operator process. Everything is real; nothing here is a stand-in."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

import cluster

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_for(what: str, get: Callable[[], T], ok: Callable[[T], bool], timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = get()
        if ok(last):
            return last
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Env:
    info: dict[str, Any]

    @property
    def kubeconfig(self) -> str:
        return str(self.info["kubeconfig"])

    @property
    def prometheus(self) -> str:
        return str(self.info["prometheus"])

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        bins = Path(self.info["bin_dir"])
        result = subprocess.run(
            [str(bins / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def apply(self, namespace: str, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))

    def get_json(self, namespace: str, *what: str) -> dict[str, Any]:
        out = self.kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
        return dict(json.loads(out)) if out.strip() else {}

    def query(self, promql: str) -> float | None:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
        except OSError:
            return None
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if value != value else value  # NaN: no data


def start_cluster() -> Env:
    """The local cluster and Prometheus (built on first use), the CRDs installed."""
    info = cluster.up()
    env = Env(info)
    for path in [ROOT / "crds" / "rollouts.segue.dev.yaml", *cluster.gateway_api_crds()]:
        env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    env.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/rollouts.segue.dev", "crd/httproutes.gateway.networking.k8s.io",
    )  # fmt: skip
    return env


def ensure_namespace(env: Env, namespace: str) -> None:
    env.kubectl("create", "namespace", namespace, check=False)
    wait_for(
        f"namespace {namespace}'s default ServiceAccount",
        lambda: env.kubectl("get", "-n", namespace, "serviceaccount", "default", check=False),
        bool,
        60,
    )


def deployment(name: str, app: str, version: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": app, "version": version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": f"example.com/{app}:{version}"}]},
            },
        },
    }


def service(name: str, app: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app, "version": version}, "ports": [{"port": 80}]},
    }


def httproute(name: str, legacy: str, new: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "public"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": legacy, "port": 80, "weight": 100},
                        {"name": new, "port": 80, "weight": 0},
                    ]
                }
            ],
        },
    }


def service_pair(env: Env, namespace: str, app: str) -> None:
    """<app>-v1 (legacy) and <app>-v2 (new): Deployments, Services and one HTTPRoute."""
    env.apply(
        namespace,
        deployment(f"{app}-v1", app, "v1"),
        deployment(f"{app}-v2", app, "v2"),
        service(f"{app}-v1", app, "v1"),
        service(f"{app}-v2", app, "v2"),
        httproute(app, f"{app}-v1", f"{app}-v2"),
    )
    for version in ("v1", "v2"):
        env.kubectl(
            "rollout", "status", "-n", namespace, f"deployment/{app}-{version}", "--timeout=120s"
        )


@dataclass
class Process:
    proc: subprocess.Popen[Any]
    name: str
    metrics_port: int = 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Sim(Process):
    host_port: str = ""
    job: str = ""

    def stop(self) -> None:
        super().stop()
        if self.job:
            cluster.remove_scrape_target(self.job)

    def set(self, version: str, **behaviour: float) -> None:
        body = json.dumps({version: behaviour}).encode()
        req = urllib.request.Request(f"http://{self.host_port}/config", data=body, method="PUT")
        with urllib.request.urlopen(req, timeout=5):
            pass


def start_sim(env: Env, namespace: str, app: str, logs: Path) -> Sim:
    """The traffic simulator for <app>, following its HTTPRoute; scraped every second."""
    proc = subprocess.Popen(
        [
            sys.executable, str(ROOT / "hack" / "trafficsim.py"), "--port", "0", "--app", app,
            "--legacy-version", "v1", "--new-version", "v2", "--rate", "200",
            "--legacy-latency-ms", "40", "--new-latency-ms", "40",
            "--httproute", f"{namespace}/{app}",
            "--legacy-backend", f"{app}-v1", "--new-backend", f"{app}-v2",
            "--kubeconfig", env.kubeconfig,
        ],
        stdout=subprocess.PIPE, stderr=(logs / f"trafficsim-{app}.log").open("ab"), text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the traffic simulator for {app} did not start: {line!r}")
    job = f"trafficsim-{namespace}-{app}"
    sim = Sim(proc, f"trafficsim-{app}", host_port=line.removeprefix("listening on "), job=job)
    cluster.add_scrape_target(job, sim.host_port)
    wait_for(
        f"Prometheus to scrape the simulator of {app}",
        lambda: env.query(f'up{{job="trafficsim-{namespace}-{app}"}}'),
        lambda v: v == 1.0,
        60,
    )
    return sim


def start_operator(env: Env, namespace: str, log: Path, verbose: bool = False) -> Process:
    port, metrics_port = free_port(), free_port()
    argv = [
        sys.executable, "-m", "segue", "--namespace", namespace,
        "--liveness", f"http://127.0.0.1:{port}/healthz", "--metrics-port", str(metrics_port),
        "--prometheus-address", env.prometheus,
    ]  # fmt: skip
    if verbose:
        argv.append("--verbose")
    proc = subprocess.Popen(
        argv,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": env.kubeconfig},
        cwd=ROOT,
    )

    def alive() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"the operator exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    wait_for("the operator's liveness endpoint", alive, bool, 60)
    return Process(proc, "operator", metrics_port)


def rollout(app: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    """A Rollout of <app>-v1 to <app>-v2 on the Gateway API router."""
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name or app},
        "spec": {
            "legacy": {"deployment": f"{app}-v1", "version": "v1"},
            "new": {"deployment": f"{app}-v2", "version": "v2"},
            "traffic": {
                "gatewayAPI": {
                    "httpRoute": app,
                    "legacyBackend": f"{app}-v1",
                    "newBackend": f"{app}-v2",
                }
            },
            **spec,
        },
    }


def route_weight(env: Env, namespace: str, route: str) -> int | None:
    obj = env.get_json(namespace, "httproute", route)
    try:
        return int(obj["spec"]["rules"][0]["backendRefs"][1].get("weight", 1))
    except (KeyError, IndexError):
        return None
