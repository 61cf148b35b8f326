"""Helpers shared by the end-to-end tests: waiting, manifests, the operator process and the
traffic simulator, all real processes talking to the real local cluster."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from segue import GROUP, PLURAL, VERSION
from segue_testkit.scenario import (  # the same pieces the demo and benchmarks use
    Operator,
    Sim,
    deployment,
    free_port,
    httproute,
    launch_sim,
    start_operator,
)
from segue_testkit.scenario import wait_for as wait_until

__all__ = [
    "Operator",
    "PrivatePrometheus",
    "Rollouts",
    "Sim",
    "WeightRecorder",
    "apply",
    "deployment",
    "free_port",
    "httproute",
    "launch_sim",
    "shop_pair",
    "start_operator",
    "wait_until",
]


def apply(kube: Any, namespace: str, *docs: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def shop_pair(kube: Any, namespace: str, replicas: int = 2) -> Rollouts:
    """Deployments shop-v1 (legacy) and shop-v2 (new), ready, behind the HTTPRoute shop."""
    apply(
        kube,
        namespace,
        deployment("shop-v1", "shop", replicas),
        deployment("shop-v2", "shop", replicas),
        httproute("shop", "shop-v1", "shop-v2"),
    )
    rollouts = Rollouts(kube.api_client, namespace)
    for name in ("shop-v1", "shop-v2"):
        wait_until(f"{name} ready", partial(rollouts.replicas, name), lambda r: r[1] == replicas)
    return rollouts


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

    def get_route(self, route: str) -> dict[str, Any]:
        obj: Any = self.objects.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", route
        )
        return dict(obj)

    def route_weights(self, route: str) -> tuple[int, int]:
        obj = self.get_route(route)
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


class PrivatePrometheus:
    """A Prometheus of one test's own, so the test can stop and start it without touching
    the shared one. Same binary and scrape settings as segue_testkit.cluster's."""

    def __init__(self, workdir: Path, target: str) -> None:
        from segue_testkit import cluster

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


class WeightRecorder:
    """Records every distinct new-version weight the HTTPRoute shows, polling at 50 ms."""

    def __init__(self, rollouts: Rollouts, route: str) -> None:
        self.seen: list[int] = []
        self._rollouts, self._route = rollouts, route
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _look(self) -> None:
        weight = self._rollouts.new_weight(self._route)
        if not self.seen or self.seen[-1] != weight:
            self.seen.append(weight)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._look()
            time.sleep(0.05)

    def stop(self) -> list[int]:
        """Stop, after one last look: the status can report a weight (RolledBack, say)
        less than one polling period after the route reached it."""
        self._stop.set()
        self._thread.join()
        self._look()
        return self.seen
