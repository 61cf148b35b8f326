"""KWOK's fake nodes, and the kubectl built with the control plane."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def kubectl(bins: Path, kubeconfig: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        [str(bins / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        check=True,
        capture_output=True,
        text=True,
        input=input,
    ).stdout


def fake_nodes_manifest(count: int) -> str:
    docs = []
    for i in range(count):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"kwok-node-{i}",
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": f"kwok-node-{i}",
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                    },
                },
                "spec": {},
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            }
        )
    return "\n---\n".join(json.dumps(d) for d in docs)
