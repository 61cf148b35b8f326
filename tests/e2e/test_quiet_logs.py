"""Normal completion is quiet: twenty Rollouts that succeed leave no warning, error or
traceback in the operator's log, and once they have succeeded (and their Events are
posted) the operator makes no Kubernetes API request at all."""

from __future__ import annotations

import re
import time
import urllib.request
from functools import partial
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from segue_testkit.scenario import deployment, httproute, rollout, settled
from tests.e2e.support import Operator, Rollouts, apply, wait_until

pytestmark = pytest.mark.e2e

COUNT = 20
IDLE_S = 5.0
# The operator's log format: "<date> <time> <LEVEL> <logger>: <message>".
LOUD = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ")


def kube_requests(op: Operator) -> dict[str, float]:
    """The operator's Kubernetes API requests so far, by method (segue_kube_requests_total
    on its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        s.labels["method"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "segue_kube_requests_total"
    }


def test_twenty_successes_log_no_warning_and_then_cost_no_requests(
    kube: Any, namespace: str, operator: Operator
) -> None:
    apps = [f"quiet-{i:02d}" for i in range(COUNT)]
    objects: list[dict[str, Any]] = []
    for app in apps:
        objects += [
            deployment(f"{app}-v1", app, 1, version="v1"),
            deployment(f"{app}-v2", app, 1, version="v2"),
            httproute(app, f"{app}-v1", f"{app}-v2"),
        ]
    apply(kube, namespace, *objects)
    rollouts = Rollouts(kube.api_client, namespace)
    for app in apps:
        for name in (f"{app}-v1", f"{app}-v2"):
            wait_until(f"{name} ready", partial(rollouts.replicas, name), lambda r: r[1] == 1)

    steps = [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 100}]
    apply(kube, namespace, *(rollout(app, steps=steps) for app in apps))

    def phases() -> dict[str, str | None]:
        return {app: rollouts.phase(app) for app in apps}

    wait_until(
        f"{COUNT} Rollouts Succeeded",
        phases,
        lambda p: all(v == "Succeeded" for v in p.values()),
        180,
    )
    assert all(rollouts.new_weight(app) == 100 for app in apps)

    # The run's Events are posted from a queue at the events lane's rate, a little after the
    # writes they describe: once they are out, a Succeeded Rollout costs nothing.
    before = settled(partial(kube_requests, operator), quiet_s=2.0, timeout=60)
    assert sum(before.values()) > 0, "the operator's request counter reads nothing"
    time.sleep(IDLE_S)
    after = kube_requests(operator)
    spent = {m: n - before.get(m, 0) for m, n in after.items() if n != before.get(m, 0)}
    print(f"API requests by the operator over {IDLE_S:g}s once all had succeeded: {spent}")
    print(f"(while they ran: {before})")
    assert not spent, f"requests while every Rollout is Succeeded: {spent}"

    log = operator.log()
    loud = [line for line in log.splitlines() if LOUD.match(line)]
    assert not loud, "\n".join(loud[:20])
    assert "Traceback" not in log, log[-6000:]
