"""The cluster a scenario runs on: kubectl and the API client for it, Prometheus queries,
the CRDs installed, and namespaces made and removed."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from segue_testkit import cluster
from segue_testkit.scenario.waiting import wait_for


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

    @cached_property
    def api(self) -> client.ApiClient:
        """A Kubernetes client for this cluster (for what kubectl would be too slow for)."""
        api: client.ApiClient = config.new_client_from_config(config_file=self.kubeconfig)  # type: ignore[no-untyped-call]
        return api

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
    cluster.install_crds(Path(info["bin_dir"]), info["kubeconfig"])
    return Env(info)


def ensure_namespace(env: Env, namespace: str) -> None:
    env.kubectl("create", "namespace", namespace, check=False)
    wait_for(
        f"namespace {namespace}'s default ServiceAccount",
        lambda: env.kubectl("get", "-n", namespace, "serviceaccount", "default", check=False),
        bool,
        60,
    )


def delete_namespace(env: Env, namespace: str) -> None:
    """Delete a benchmark's namespace. Its Rollouts go first, while the operator still runs
    to release their finalizers; any finalizer left after that is removed, so the namespace
    never hangs in Terminating."""
    env.kubectl(
        "delete", "-n", namespace, "rollouts.segue.dev", "--all", "--timeout=90s", check=False
    )
    left = env.kubectl("get", "-n", namespace, "rollouts.segue.dev", "-o", "name", check=False)
    for name in left.split():
        env.kubectl(
            "patch", "-n", namespace, name, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
    env.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
