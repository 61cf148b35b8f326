"""The replicas router (no mesh): the weight is the share of ready pods, and ready capacity
never drops below what the legacy version had."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.e2e.support import Rollouts, apply, deployment, wait_until

pytestmark = pytest.mark.e2e


def rollout(steps: list[Any]) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "search"},
        "spec": {
            "legacy": {"deployment": "search-v1"},
            "new": {"deployment": "search-v2"},
            "traffic": {"replicas": {}},
            "steps": steps,
        },
    }


class CapacityRecorder:
    """Samples (legacy ready, new ready) every 50 ms."""

    def __init__(self, rollouts: Rollouts) -> None:
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(rollouts,), daemon=True)
        self._thread.start()

    def _run(self, rollouts: Rollouts) -> None:
        while not self._stop.is_set():
            self.samples.append(
                (rollouts.replicas("search-v1")[1], rollouts.replicas("search-v2")[1])
            )
            time.sleep(0.05)

    def stop(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join()
        return self.samples


@pytest.fixture
def pair(kube: Any, namespace: str, crds: None) -> Rollouts:
    apply(
        kube, namespace, deployment("search-v1", "search", 4), deployment("search-v2", "search", 0)
    )
    rollouts = Rollouts(kube.api_client, namespace)
    wait_until("legacy ready", lambda: rollouts.replicas("search-v1"), lambda r: r == (4, 4))
    return rollouts


def test_weights_follow_ready_pods_without_losing_capacity(kube, namespace, pair, operator):
    recorder = CapacityRecorder(pair)
    steps = [{"setWeight": 25}, {"pause": {"duration": "1s"}}, {"setWeight": 50}]
    apply(kube, namespace, rollout(steps))
    wait_until("Succeeded", lambda: pair.phase("search"), lambda p: p == "Succeeded", 120)
    samples = recorder.stop()
    assert pair.replicas("search-v2") == (4, 4) and pair.replicas("search-v1")[0] == 0
    assert min(legacy + new for legacy, new in samples) >= 4, samples
    confirmed = [h["weight"] for h in pair.status("search")["history"] if h["event"] == "WeightSet"]
    assert confirmed == [25, 50, 100]
    baseline = pair.apps.read_namespaced_deployment("search-v1", namespace).metadata.annotations
    assert baseline["segue.dev/baseline-replicas"] == "4"


def test_abort_scales_legacy_back_before_new_goes(kube, namespace, pair, operator):
    apply(kube, namespace, rollout([{"setWeight": 50}, {"approval": {}}]))
    wait_until("AwaitingApproval", lambda: pair.phase("search"), lambda p: p == "AwaitingApproval")
    assert pair.replicas("search-v2") == (2, 2) and pair.replicas("search-v1") == (2, 2)
    recorder = CapacityRecorder(pair)
    pair.annotate("search", {"segue.dev/abort": "test"})
    wait_until("RolledBack", lambda: pair.phase("search"), lambda p: p == "RolledBack", 60)
    samples = recorder.stop()
    assert pair.replicas("search-v1") == (4, 4) and pair.replicas("search-v2")[0] == 0
    assert min(legacy + new for legacy, new in samples) >= 4, samples
