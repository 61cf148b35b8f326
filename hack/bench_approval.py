#!/usr/bin/env python3
"""Reaction time from an approval annotation to the router's next weight write.

Each run brings a Rollout to an approval step at 10 %, writes segue.dev/approve=<step>
through the API, and polls the HTTPRoute every 10 ms until it sends 50 % to the new version.

    python hack/bench_approval.py --runs 10
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client, config

from segue_testkit import scenario

NAMESPACE = "segue-approval"
APP = "approve"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    env = scenario.start_cluster()
    scenario.ensure_namespace(env, NAMESPACE)
    operator = scenario.start_operator(
        env.kubeconfig,
        Path(env.info["logs"]) / "operator-approval.log",
        [NAMESPACE],
        prometheus=env.prometheus,
    )
    api = config.new_client_from_config(config_file=env.kubeconfig)  # type: ignore[no-untyped-call]
    objects = client.CustomObjectsApi(api)

    def rollout(name: str) -> dict[str, Any]:
        obj: Any = objects.get_namespaced_custom_object(
            "segue.dev", "v1alpha1", NAMESPACE, "rollouts", name
        )
        return dict(obj)

    def weight() -> int:
        route: Any = objects.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", APP
        )
        return int(route["spec"]["rules"][0]["backendRefs"][1].get("weight", 1))

    results: list[float] = []
    try:
        env.kubectl("delete", "-n", NAMESPACE, "rollouts.segue.dev", "--all", "--timeout=120s")
        scenario.service_pair(env, NAMESPACE, APP)
        for run in range(1, args.runs + 1):
            name = f"{APP}-{run}"
            steps = [{"setWeight": 10}, {"approval": {}}, {"setWeight": 50}, {"approval": {}}]
            env.apply(NAMESPACE, scenario.rollout(APP, name=name, steps=steps))
            scenario.wait_for(
                "AwaitingApproval",
                partial(rollout, name),
                lambda r: (r.get("status") or {}).get("phase") == "AwaitingApproval",
            )
            step = rollout(name)["status"]["step"]
            started = time.monotonic()
            objects.patch_namespaced_custom_object(
                "segue.dev", "v1alpha1", NAMESPACE, "rollouts", name,
                {"metadata": {"annotations": {"segue.dev/approve": str(step)}}},
            )  # fmt: skip
            while weight() != 50:
                time.sleep(0.01)
            took = time.monotonic() - started
            results.append(took)
            print(f"run {run:>2}: approval -> weight 50 written in {took:.3f}s", flush=True)
            env.kubectl("delete", "-n", NAMESPACE, f"rollout.segue.dev/{name}", "--timeout=60s")
            env.apply(NAMESPACE, scenario.httproute(APP, f"{APP}-v1", f"{APP}-v2"))
    finally:
        operator.stop()
    ordered = sorted(results)
    print(
        f"\nruns: {len(results)}  approval -> next weight write: "
        f"median {statistics.median(results):.3f}s  max {ordered[-1]:.3f}s  "
        f"min {ordered[0]:.3f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
