#!/usr/bin/env python3
"""How many Kubernetes API requests does one step cost? Runs a Rollout of N weight steps
(no analysis) on the Gateway API router and reads the operator's own request counter
(segue_kube_requests_total) before and after, then checks that a finished Rollout costs
nothing more while idle.

    python hack/count_requests.py --steps 5
"""

from __future__ import annotations

import argparse
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import scenario

NAMESPACE = "segue-count"
APP = "count"


def requests_by_method(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "segue_kube_requests_total":
                out[s.labels["method"]] = s.value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    env = scenario.start_cluster()
    scenario.ensure_namespace(env, NAMESPACE)
    logs = Path(env.info["logs"])
    operator = scenario.start_operator(
        env.kubeconfig, logs / "operator-count.log", [NAMESPACE], prometheus=env.prometheus
    )
    port = operator.metrics_port
    try:
        env.kubectl("delete", "-n", NAMESPACE, "rollouts.segue.dev", "--all", "--timeout=120s")
        scenario.service_pair(env, NAMESPACE, APP)
        weights = [round(100 * (i + 1) / args.steps) for i in range(args.steps)]
        before = requests_by_method(port)
        env.apply(NAMESPACE, scenario.rollout(APP, steps=[{"setWeight": w} for w in weights]))
        scenario.wait_for(
            "Succeeded",
            lambda: (env.get_json(NAMESPACE, "rollout.segue.dev", APP).get("status") or {}).get(
                "phase"
            ),
            lambda p: p == "Succeeded",
        )
        time.sleep(2)
        after = requests_by_method(port)
        time.sleep(10)
        idle = requests_by_method(port)
    finally:
        operator.stop()
    spent = {m: after.get(m, 0) - before.get(m, 0) for m in after}
    total = sum(spent.values())
    print(f"weight steps: {args.steps} ({' -> '.join(map(str, weights))})")
    print(f"API requests for the whole Rollout: {total:.0f}  "
          + "  ".join(f"{m} {v:.0f}" for m, v in sorted(spent.items())))  # fmt: skip
    print(f"per weight step: {total / args.steps:.1f}")
    print(f"while Succeeded, over 10 s: {sum(idle.values()) - sum(after.values()):.0f} requests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
