"""Batched gate queries against a real Prometheus scraping the traffic simulator: for every
template, the value a Rollout reads from the batched query equals its own single query's at
the same evaluation time; and two Rollouts run by the real operator share one query per
template per tick (Prometheus' own query log holds no query of one Rollout alone)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from segue.analysis.batches import BatchRef
from segue.analysis.providers.base import RoundContext
from segue.analysis.providers.prometheus.client import parse_result, parse_vector
from segue.analysis.providers.prometheus.planning import QueryPlan, plan_gate
from segue.analysis.providers.prometheus.templates import TEMPLATE_NAMES
from segue.api.spec import Gate
from tests.e2e.support import (
    PrivatePrometheus,
    Rollouts,
    Sim,
    apply,
    deployment,
    httproute,
    launch_sim,
    start_operator,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _at(url: str, query: str, at: float) -> Any:
    """The ``data.result`` of an instant query evaluated at ``at``."""
    r = requests.get(f"{url}/api/v1/query", params={"query": query, "time": f"{at:.3f}"}, timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def two_sims(kube: Any, prometheus: Any) -> Iterator[list[Sim]]:
    """Two applications at 30 % new traffic; the second's new version fails 30 % of its
    requests and is slower. The first app's name has a regex metacharacter in it."""
    tag = uuid.uuid4().hex[:6]
    sims = [
        launch_sim(kube.kubeconfig, f"web.{tag}", "--static-weight", "30"),
        launch_sim(kube.kubeconfig, f"api-{tag}", "--static-weight", "30"),
    ]
    sims[1].put({"new": {"errorRate": 0.3, "latencyMs": 120}})
    jobs = []
    try:
        for sim in sims:
            job = f"batch-{sim.app}"
            prometheus.add_scrape_target(job, sim.host_port)
            jobs.append(job)
        yield sims
    finally:
        for job in jobs:
            prometheus.remove_scrape_target(job)
        for sim in sims:
            sim.stop()


def test_batched_values_equal_single_values_for_every_template(prometheus, two_sims):
    plans: list[QueryPlan] = []
    for sim in two_sims:
        context = RoundContext("shop", sim.app, "v1", "v2", "2s", weight=30)
        for template in TEMPLATE_NAMES:
            labels = {"app": sim.app, "window": "5s"}
            plans.append(plan_gate(Gate(name=template, template=template, labels=labels), context))
    queries = [q for p in plans for q in (p.new_query, p.legacy_query) if q is not None]

    def data() -> tuple[float, list[float | None]]:
        # Two seconds back: every scrape up to then is in, so the answers cannot change.
        at = time.time() - 2
        return at, [parse_result(_at(prometheus.url, q, at)) for q in queries]

    # One evaluation time at which both versions of both apps have every series.
    at, _ = wait_until("every single query to have data", data, lambda d: None not in d[1], 60)
    sides: list[tuple[str, BatchRef]] = []
    for p in plans:
        assert p.new_batch is not None and p.legacy_batch is not None and p.legacy_query
        sides += [(p.new_query, p.new_batch), (p.legacy_query, p.legacy_batch)]
    families = {ref.family for _, ref in sides}
    assert len(families) == len(TEMPLATE_NAMES)  # the two apps share every template's query
    read: dict[BatchRef, float | None] = {}
    for family in families:
        members = [ref.member for _, ref in sides if ref.family == family]
        ((query, covered),) = family.chunks(members)  # one query for 4 Rollout versions
        assert len(covered) == 4
        series = parse_vector(_at(prometheus.url, query, at))
        for _, ref in sides:
            if ref.family == family:
                read[ref] = family.pick(series, ref.member)
    for query, ref in sides:
        single = parse_result(_at(prometheus.url, query, at))
        assert single is not None
        assert read[ref] == pytest.approx(single, rel=1e-9, abs=1e-12), (query, ref)
    errors = {r.member: v for r, v in read.items() if r.family.template == "error-rate"}
    assert sorted(v or 0.0 for v in errors.values())[-1] > 0.1  # api's new version fails


def _pair(kube: Any, namespace: str, app: str) -> None:
    apply(
        kube,
        namespace,
        deployment(f"{app}-v1", app, 1),
        deployment(f"{app}-v2", app, 1),
        httproute(app, f"{app}-v1", f"{app}-v2"),
    )


def _rollout(app: str) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": app},
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
            "steps": [{"setWeight": 30}, {"approval": {}}],
            "analysis": {
                "interval": "2s",
                "gates": [
                    {
                        "name": "errors",
                        "template": "error-rate",
                        "labels": {"app": "{{ rollout }}", "window": "5s"},
                    }
                ],
            },
        },
    }


def _gate(status: dict[str, Any]) -> dict[str, Any]:
    return next((g for g in status.get("gates", []) if g["name"] == "errors"), {})


def _queries(log: Path) -> list[str]:
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    return [json.loads(line)["params"]["query"] for line in lines if line.strip()]


def _batch_size(metrics_port: int) -> tuple[float, float]:
    """segue_metric_query_batch_size: (count, sum) so far."""
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "segue_metric_query_batch_size_count":
                count += s.value
            elif s.name == "segue_metric_query_batch_size_sum":
                total += s.value
    return count, total


def test_two_rollouts_share_one_query_per_tick(kube, namespace, crds, tmp_path):
    apps = ["shop", "cart"]
    sims = []
    for app in apps:
        _pair(kube, namespace, app)
        sims.append(
            launch_sim(
                kube.kubeconfig,
                app,
                "--httproute",
                f"{namespace}/{app}",
                "--legacy-backend",
                f"{app}-v1",
                "--new-backend",
                f"{app}-v2",
            )
        )
    private = PrivatePrometheus(tmp_path, sims[0].host_port)
    query_log = tmp_path / "queries.jsonl"
    targets = ", ".join(f"'{s.host_port}'" for s in sims)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s, "
        f"query_log_file: '{query_log}'}}\n"
        f"scrape_configs:\n  - job_name: sim\n    static_configs: [{{targets: [{targets}]}}]\n"
    )
    private.start()
    operator = start_operator(
        kube.kubeconfig, tmp_path / "operator.log", [namespace], prometheus=private.url
    )
    try:
        rollouts = Rollouts(kube.api_client, namespace)
        for app in apps:
            for name in (f"{app}-v1", f"{app}-v2"):
                wait_until(f"{name} ready", partial(rollouts.replicas, name), lambda r: r[1] == 1)
        for app in apps:
            apply(kube, namespace, _rollout(app))
        for app in apps:
            wait_until(
                f"{app}: a passing round at 30 %",
                partial(rollouts.status, app),
                lambda s: (
                    s.get("phase") == "AwaitingApproval" and _gate(s).get("verdict") == "Pass"
                ),
                90,
            )
        # Both Rollouts are under analysis: from here on every tick is one shared query.
        seen = len(_queries(query_log))
        sizes = _batch_size(operator.metrics_port)
        window = wait_until(
            "six more ticks",
            lambda: _queries(query_log)[seen:],
            lambda queries: len(queries) >= 6,
            60,
        )
        for query in window:
            assert 'app=~"cart|shop"' in query, query  # both Rollouts in every query
            assert 'app="' not in query, query  # and none of one Rollout alone
        count, total = _batch_size(operator.metrics_port)
        assert count > sizes[0] and (total - sizes[1]) == 4 * (count - sizes[0])
        for app in apps:
            gate = _gate(rollouts.status(app))
            # No errors: the value is exactly what the single query gives, 0.
            assert gate["verdict"] == "Pass" and gate["value"] == 0.0, gate
        # The batched verdict still tells the Rollouts apart: only cart's new version fails.
        sims[1].put({"new": {"errorRate": 0.5}})
        wait_until(
            "cart rolled back", partial(rollouts.phase, "cart"), lambda p: p == "RolledBack", 60
        )
        shop = rollouts.status("shop")
        assert shop["phase"] == "AwaitingApproval" and _gate(shop)["verdict"] == "Pass", shop
    finally:
        operator.stop()
        print(f"--- operator log ---\n{operator.log()[-6000:]}")
        private.stop()
        for sim in sims:
            sim.stop()
