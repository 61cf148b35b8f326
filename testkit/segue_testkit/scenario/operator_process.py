"""The Segue operator (``python -m segue``) as a child process: started, checked, its API
request counters read, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from segue.traffic.catalog import ROUTERS
from segue_testkit.scenario.processes import free_port, stop_process
from segue_testkit.scenario.waiting import wait_for


@dataclass
class Operator:
    """`python -m segue`, running."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check(self) -> None:
        """Raise if the operator has exited (a benchmark would otherwise wait for nothing)."""
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"the operator exited ({self.proc.returncode}); the end of {self.log_path}:\n"
                f"{self.log()[-3000:]}"
            )

    def requests(self) -> dict[str, float]:
        """Kubernetes API requests made so far, by method (segue_kube_requests_total; Events
        are its POSTs; the Lease, on the leader elector's own client, does not count). Only
        that metric is asked for: the whole page, a few series per Rollout, is costly to
        render at a thousand Rollouts, and a benchmark must not add to what it measures."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics?name[]=segue_kube_requests_total"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "segue_kube_requests_total":
                    out[s.labels["method"]] = s.value
        return out

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)


def start_operator(
    kubeconfig: str,
    log: Path,
    namespaces: Sequence[str] = (),
    prometheus: str | None = None,
    metrics_port: int | None = None,
    verbose: bool = False,
    extra_args: Sequence[str] = (),
) -> Operator:
    """The operator against ``kubeconfig``, watching ``namespaces`` (none: all of them),
    running every router in the catalog unless ``extra_args`` name ``--routers``; returns
    once its liveness endpoint answers (a standby answers it too).

    Leader election is on, as in production: the Lease is in the first of ``namespaces``
    (``default`` without any) unless ``extra_args`` say otherwise."""
    port = free_port()
    metrics_port = metrics_port or free_port()
    argv = [sys.executable, "-m", "segue", "--liveness", f"http://127.0.0.1:{port}/healthz"]
    argv += ["--metrics-port", str(metrics_port)]
    for namespace in namespaces:
        argv += ["--namespace", namespace]
    if prometheus:
        argv += ["--prometheus-address", prometheus]
    if verbose:
        argv.append("--verbose")
    if not any(a == "--routers" or a.startswith("--routers=") for a in extra_args):
        # The test cluster installs the CRDs of every router in the catalog
        # (segue_testkit.cluster.crd_sources), so the operator runs them all.
        argv += ["--routers", ",".join(p.key for p in ROUTERS)]
    argv += extra_args
    # Only the given kubeconfig: never in-cluster credentials from the environment, nor the
    # Lease namespace of a pod these tests might run in.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KUBERNETES_") and k != "POD_NAMESPACE"
    }
    env["KUBECONFIG"] = kubeconfig
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    operator = Operator(proc, log, metrics_port)

    def alive() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the operator exited ({proc.returncode}):\n{operator.log()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    wait_for("the operator's liveness endpoint", alive, bool, 60)
    return operator
