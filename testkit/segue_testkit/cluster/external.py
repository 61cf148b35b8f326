"""Clusters that are not the local control plane: kind (where a Docker daemon runs) and an
existing cluster given by its kubeconfig. Prometheus and the binaries are still local."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from segue_testkit.cluster.binaries import build
from segue_testkit.cluster.processes import Proc, alive
from segue_testkit.cluster.prometheus import start_prometheus
from segue_testkit.cluster.settings import state_dir
from segue_testkit.cluster.state import load_state, save_state
from segue_testkit.cluster.usage import print_usage


def up_kind(with_prometheus: bool) -> dict[str, Any]:
    """Where kind and a Docker daemon exist, the same tests can run on a kind cluster."""
    if (
        not shutil.which("kind")
        or subprocess.run(["docker", "info"], capture_output=True).returncode
    ):
        raise SystemExit("SEGUE_CLUSTER=kind needs `kind` on PATH and a running Docker daemon")
    root = state_dir()
    root.mkdir(parents=True, exist_ok=True)
    kubeconfig = root / "kubeconfig"
    if subprocess.run(
        ["kind", "get", "kubeconfig", "--name", "segue"], capture_output=True
    ).returncode:
        subprocess.run(
            ["kind", "create", "cluster", "--name", "segue", "--kubeconfig", str(kubeconfig)],
            check=True,
        )
    procs: list[Proc] = []
    info: dict[str, Any] = {
        "kubeconfig": str(kubeconfig),
        "kind": True,
        "logs": str(root / "logs"),
        "bin_dir": str(build()),
    }
    if with_prometheus:
        info.update(start_prometheus(root, root / "logs", procs))
    save_state(procs, extra=info)
    print_usage(info)
    return info


def up_external(kubeconfig: str) -> dict[str, Any]:
    """Use a cluster someone else runs; only Prometheus (and the binaries) are ours."""
    root = state_dir()
    running = load_state()
    if running.get("procs") and all(alive(Proc(**p)) for p in running["procs"]):
        return dict(running["info"])
    procs: list[Proc] = []
    info: dict[str, Any] = {
        "kubeconfig": kubeconfig,
        "kind": False,
        "external": True,
        "logs": str(root / "logs"),
        "bin_dir": str(build()),
    }
    info.update(start_prometheus(root, root / "logs", procs))
    save_state(procs, extra=info)
    return info
