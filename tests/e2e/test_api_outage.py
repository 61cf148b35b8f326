"""The kube-apiserver goes away in the middle of a Rollout: the operator lives through it,
says so once, and carries on promptly when the API server answers again.

Stopping an API server would break every other test on the shared cluster, so this test
brings up a private cluster of its own (segue_testkit.cluster with its own SEGUE_CLUSTER_DIR,
without Prometheus), stops and starts only its kube-apiserver, and takes it down at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest
from kubernetes import config
from kubernetes.client.exceptions import ApiException

from segue import GROUP, PLURAL, VERSION
from segue_testkit import cluster
from segue_testkit.scenario import rollout
from tests.e2e.conftest import Kube, install_crds
from tests.e2e.support import Operator, Rollouts, apply, shop_pair, start_operator, wait_until

pytestmark = pytest.mark.e2e

NAMESPACE = "default"
HOLD_S = 8.0
OUTAGE_S = 20.0
# The design's target is 2 s from the API server's return to progress; timed assertions
# are kept generous on this shared, busy machine. The figure is printed either way.
RESUME_BOUND_S = 5.0


@dataclass
class PrivateCluster:
    root: Path
    kube: Kube
    server: str

    def stop_apiserver(self) -> None:
        cluster_command(self.root, "apiserver", "stop")

    def start_apiserver(self) -> subprocess.Popen[bytes]:
        """`apiserver start`, not waited for: the caller watches /readyz itself."""
        return subprocess.Popen(cluster_argv("apiserver", "start"), env=cluster_env(self.root))

    def ready(self) -> bool:
        try:
            return cluster.https_ok(f"{self.server}/readyz", self.root / "pki")
        except OSError:
            return False


def cluster_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "segue_testkit.cluster", *args]


def cluster_env(root: Path) -> dict[str, str]:
    """segue_testkit.cluster keeps a cluster's state, certificates and logs in SEGUE_CLUSTER_DIR."""
    return dict(os.environ, SEGUE_CLUSTER_DIR=str(root))


def cluster_command(root: Path, *args: str) -> None:
    subprocess.run(cluster_argv(*args), env=cluster_env(root), check=True, timeout=300)


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[PrivateCluster]:
    root = tmp_path / "cluster"
    try:
        cluster_command(root, "up", "--no-prometheus")
        info = json.loads((root / "state.json").read_text())["info"]
        kubeconfig = str(info["kubeconfig"])
        kube = Kube(
            kubeconfig=kubeconfig,
            bin_dir=Path(info["bin_dir"]),
            api_client=config.new_client_from_config(config_file=kubeconfig),  # type: ignore[no-untyped-call]
            env=dict(os.environ, KUBECONFIG=kubeconfig),
        )
        yield PrivateCluster(root, kube, str(info["server"]))
    finally:
        cluster_command(root, "down")  # this test's cluster only: SEGUE_CLUSTER_DIR is its own


def lines(op: Operator, text: str) -> list[str]:
    return [line for line in op.log().splitlines() if text in line]


def serves_rollouts(rollouts: Rollouts) -> bool:
    try:
        rollouts.objects.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    except ApiException as e:
        if e.status == 429:  # "storage is (re)initializing"
            return False
        raise
    return True


def test_progress_resumes_promptly_when_the_api_server_returns(
    private_cluster: PrivateCluster, tmp_path: Path
) -> None:
    kube = private_cluster.kube
    install_crds(kube)
    rollouts: Rollouts = shop_pair(kube, NAMESPACE, replicas=1)
    # The API server sets up a new custom resource's storage on its first request and
    # answers 429 until it is ready. That first request is made here, so the operator
    # starts, as in production, against a Rollout API that already serves.
    wait_until("the Rollout API to serve", partial(serves_rollouts, rollouts), bool, 30)
    op = start_operator(kube.kubeconfig, tmp_path / "operator.log", [NAMESPACE])
    try:
        steps = [
            {"setWeight": 10},
            {"pause": {"duration": f"{HOLD_S:g}s"}},
            {"setWeight": 50},
            {"approval": {}},
        ]
        apply(kube, NAMESPACE, rollout("shop", steps=steps))
        status = wait_until(
            "the hold at 10 %",
            lambda: rollouts.status("shop"),
            lambda s: s.get("step") == 1 and s.get("phase") == "Progressing",
            90,
        )
        assert rollouts.new_weight("shop") == 10
        started = datetime.fromisoformat(status["stepStartedAt"].replace("Z", "+00:00"))
        hold_ends = started.timestamp() + HOLD_S

        stopped = time.monotonic()
        private_cluster.stop_apiserver()
        assert not private_cluster.ready()
        time.sleep(max(0.0, stopped + OUTAGE_S - time.monotonic()))
        assert time.time() > hold_ends, "the hold should have ended during the outage"

        starting = private_cluster.start_apiserver()
        try:
            ready_at = wait_until(
                "the API server's /readyz",
                lambda: time.monotonic() if private_cluster.ready() else None,
                lambda t: t is not None,
                90,
            )
        finally:
            assert starting.wait(timeout=120) == 0
        assert ready_at is not None
        print(f"API server away for {ready_at - stopped:.1f}s (stop to /readyz)")

        def weight() -> int:
            code = op.proc.poll()
            if code is not None:
                raise AssertionError(
                    f"the operator exited ({code}) during the outage:\n{op.log()[-4000:]}"
                )
            return rollouts.new_weight("shop")

        wait_until("the route at 50 %", weight, lambda w: w == 50, 60)
        took = time.monotonic() - ready_at
        print(f"the route read 50 % {took:.2f}s after /readyz answered")
        assert took <= RESUME_BOUND_S, f"progress resumed {took:.1f}s after the API server"

        wait_until(
            "AwaitingApproval", lambda: rollouts.phase("shop"), lambda p: p == "AwaitingApproval"
        )
        assert op.proc.poll() is None, op.log()[-4000:]
        unreachable = lines(op, "Kubernetes API unreachable")
        assert len(unreachable) == 1, unreachable
        reachable = lines(op, "reachable again")
        assert len(reachable) == 1, reachable
        assert "Traceback" not in op.log(), op.log()[-6000:]
    finally:
        op.stop()
        print(f"--- operator log ({op.log_path}) ---\n{op.log()[-6000:]}")
