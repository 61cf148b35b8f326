#!/usr/bin/env python3
"""Benchmark: how fast does Segue pull a bad new version out of traffic?

Each run brings a Rollout to 25 % with a passing error-rate gate, injects 20 % errors into
the new version, and measures the time from the fault becoming visible in Prometheus (the
gate's own query first exceeds its bound, polled every 50 ms) to the HTTPRoute sending 0 %
to the new version (polled every 20 ms). Prints p50/p99 with the intervals used.

    python hack/bench_rollback.py --runs 20 --interval 2s
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client, config

import scenario
from scenario import percentile

NAMESPACE = "segue-bench"
APP = "bench"
BOUND = 0.05
SCRAPE_INTERVAL_S = 1.0  # hack/cluster.py's Prometheus configuration


def error_query(window: str) -> str:
    sel = f'app="{APP}",version="v2"'
    return (
        f'(sum(rate(http_requests_total{{{sel},code=~"5.."}}[{window}])) or vector(0))'
        f" / sum(rate(http_requests_total{{{sel}}}[{window}]))"
    )


class FirstTime(threading.Thread):
    """Polls ``check`` until it is true; records the wall-clock time it first was."""

    def __init__(self, check: Any, every: float) -> None:
        super().__init__(daemon=True)
        self.check, self.every = check, every
        self.at: float | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            if self.check():
                self.at = time.monotonic()
                return
            time.sleep(self.every)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--interval", default="2s", help="spec.analysis.interval")
    parser.add_argument("--window", default="5s", help="rate window of the gate's query")
    args = parser.parse_args()

    env = scenario.start_cluster()
    scenario.ensure_namespace(env, NAMESPACE)
    logs = Path(env.info["logs"])
    operator = scenario.start_operator(
        env.kubeconfig, logs / "operator-bench.log", [NAMESPACE], prometheus=env.prometheus
    )
    env.kubectl("delete", "-n", NAMESPACE, "rollouts.segue.dev", "--all", "--timeout=120s")
    scenario.service_pair(env, NAMESPACE, APP)
    sim = scenario.start_sim(env, NAMESPACE, APP, logs)
    api = config.new_client_from_config(config_file=env.kubeconfig)  # type: ignore[no-untyped-call]
    objects = client.CustomObjectsApi(api)

    def route_weight() -> int:
        route: Any = objects.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", APP
        )
        return int(route["spec"]["rules"][0]["backendRefs"][1].get("weight", 1))

    def status(name: str) -> dict[str, Any]:
        obj: Any = objects.get_namespaced_custom_object(
            "segue.dev", "v1alpha1", NAMESPACE, "rollouts", name
        )
        return dict(obj.get("status") or {})

    def phase_of(name: str) -> str | None:
        return status(name).get("phase")

    gate = {
        "name": "errors",
        "template": "error-rate",
        "labels": {"app": APP, "window": args.window},
    }
    query = error_query(args.window)
    results: list[float] = []
    try:
        for run in range(1, args.runs + 1):
            name = f"{APP}-{run}"
            spec = scenario.rollout(
                APP,
                name=name,
                steps=[{"setWeight": 25}, {"approval": {}}],
                analysis={"interval": args.interval, "gates": [gate]},
            )
            env.apply(NAMESPACE, spec)
            scenario.wait_for(
                f"{name} at 25 % with a passing gate",
                partial(status, name),
                lambda s: (
                    s.get("phase") == "AwaitingApproval"
                    and any(g.get("verdict") == "Pass" for g in s.get("gates", []))
                ),
                120,
            )
            visible = FirstTime(lambda: (env.query(query) or 0) > BOUND, 0.05)
            zero = FirstTime(lambda: route_weight() == 0, 0.02)
            visible.start()
            zero.start()
            sim.set("new", errorRate=0.2)
            zero.join(timeout=120)
            visible.stopped.set()
            visible.join(timeout=5)
            sim.set("new", errorRate=0.0)
            if zero.at is None or visible.at is None:
                raise SystemExit(f"run {run}: no rollback observed (visible={visible.at})")
            took = zero.at - visible.at
            results.append(took)
            phase = scenario.wait_for(
                "RolledBack", partial(phase_of, name), lambda p: p == "RolledBack"
            )
            print(f"run {run:>2}: fault visible -> weight 0 in {took:6.3f}s ({phase})", flush=True)
            env.kubectl("delete", "-n", NAMESPACE, f"rollout.segue.dev/{name}", "--timeout=60s")
            # Let the injected errors leave the query window before the next run.
            scenario.wait_for(
                "the error series to drain", lambda: env.query(query), lambda v: v is None, 120
            )
    finally:
        sim.stop()
        operator.stop()

    interval = float(args.interval.rstrip("s"))
    print()
    print(f"runs: {len(results)}  analysis interval: {args.interval}  "
          f"scrape interval: {SCRAPE_INTERVAL_S:g}s  query window: {args.window}")  # fmt: skip
    print(f"fault visible in Prometheus -> router weight 0:  "
          f"p50 {percentile(results, 50):.3f}s  p99 {percentile(results, 99):.3f}s  "
          f"min {min(results):.3f}s  max {max(results):.3f}s  "
          f"mean {statistics.mean(results):.3f}s")  # fmt: skip
    target = interval + 1
    verdict = "meets" if percentile(results, 99) <= target else "MISSES"
    print(f"target p99 <= interval + 1s = {target:g}s: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
