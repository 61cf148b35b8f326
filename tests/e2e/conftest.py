"""Fixtures for end-to-end tests: a real API server and a real Prometheus.

The session brings up the local control plane (segue_testkit.cluster) unless one is already
running, in which case it is reused and left running. Whatever the session started, it stops.
Set SEGUE_E2E_KUBECONFIG to run against an existing cluster instead (Prometheus is still
started locally, since tests add scrape targets to it).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from segue_testkit import cluster
from tests.e2e import support


@dataclass
class Kube:
    kubeconfig: str
    bin_dir: Path
    api_client: client.ApiClient
    env: dict[str, str] = field(default_factory=dict)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with the control plane (matching the server's version)."""
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )


@dataclass
class Prometheus:
    url: str

    def add_scrape_target(self, job: str, host_port: str, timeout: float = 30) -> None:
        """Scrape host_port every second as job=<job>; return once Prometheus has it up."""
        cluster.add_scrape_target(job, host_port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query(f'up{{job="{job}"}}') == 1.0:
                return
            time.sleep(0.5)
        raise AssertionError(
            f"Prometheus did not report target {job} ({host_port}) up in {timeout}s"
        )

    def remove_scrape_target(self, job: str) -> None:
        cluster.remove_scrape_target(job)

    def query(self, promql: str) -> float | None:
        """An instant query returning one number, or None when the result is empty."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as r:
            body: dict[str, Any] = json.load(r)
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return float(result[1])
        if not result:
            return None
        return float(result[0]["value"][1])


@pytest.fixture(scope="session")
def _cluster_info() -> Iterator[dict[str, Any]]:
    external = os.environ.get("SEGUE_E2E_KUBECONFIG")
    state = cluster.load_state()
    reuse = bool(state.get("procs")) and all(
        cluster.alive(cluster.Proc(**p)) for p in state["procs"]
    )
    if external:
        info = cluster.up_external(external)
    elif reuse:
        info = state["info"]
    else:
        info = cluster.up()
    try:
        yield info
    finally:
        if not reuse:
            cluster.down()


@pytest.fixture(scope="session")
def kube(_cluster_info: dict[str, Any]) -> Kube:
    kubeconfig = _cluster_info["kubeconfig"]
    api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    return Kube(
        kubeconfig=kubeconfig,
        bin_dir=Path(_cluster_info["bin_dir"]),
        api_client=api_client,
        env=dict(os.environ, KUBECONFIG=kubeconfig),
    )


@pytest.fixture(scope="session")
def prometheus(_cluster_info: dict[str, Any]) -> Prometheus:
    if "prometheus" not in _cluster_info:
        pytest.fail(
            "the running cluster was started without Prometheus; "
            "run `python -m segue_testkit.cluster down` first"
        )
    return Prometheus(url=_cluster_info["prometheus"])


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube.api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods need the namespace's default ServiceAccount, created by the controller-manager.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ):
            break
        time.sleep(0.2)
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def crds(kube: Kube) -> None:
    """Segue's CRDs and the third-party ones routers need (the real Gateway API CRDs, from
    the sigs.k8s.io/gateway-api module): segue_testkit.cluster.crd_sources()."""
    install_crds(kube)


def install_crds(kube: Kube) -> None:
    cluster.install_crds(kube.bin_dir, kube.kubeconfig)


@pytest.fixture
def operator(
    kube: Kube, prometheus: Prometheus, namespace: str, crds: None, tmp_path: Path
) -> Iterator[support.Operator]:
    """The real operator (`python -m segue`) watching this test's namespace."""
    op = support.start_operator(
        kube.kubeconfig, tmp_path / "operator.log", [namespace], prometheus=prometheus.url
    )
    try:
        yield op
    finally:
        op.stop()
        print(f"--- operator log ({op.log_path}) ---\n{op.log()[-6000:]}")
