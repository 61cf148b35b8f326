#!/usr/bin/env python3
"""How many Kubernetes API requests does one step cost? Runs a Rollout of N weight steps
(no analysis) on the Gateway API router, with a short hold after each, and reads the
operator's own request counter (segue_kube_requests_total) before it starts, during each
hold and after it succeeds, so each weight step is counted on its own. Then checks that a
finished Rollout, and Rollouts waiting at an approval step or in a long hold, cost nothing.

    python hack/count_requests.py --steps 5
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import time
from functools import partial
from pathlib import Path
from typing import Any, Final

from kubernetes import client

from segue import GROUP, PLURAL, VERSION
from segue_testkit import scenario
from segue_testkit.scenario import by_method, requests_between

APP = "count"
IDLE_S: Final = 10.0
TARGET_PER_STEP: Final = 3  # status, router write, Event
WAITING: Final = ("wait-approval", "wait-hold")
SETTLE_S: Final = 0.5  # for kopf to post the Event of a step it has just written


def holding_at(step: int, status: dict[str, Any]) -> bool:
    return status.get("step") == step and status.get("phase") == "Progressing"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--hold", default="2s", help="the pause after each weight")
    args = parser.parse_args()
    env = scenario.start_cluster()
    namespace = f"bench-count-{secrets.token_hex(3)}"
    scenario.ensure_namespace(env, namespace)
    log = Path(env.info["logs"]) / f"operator-{namespace}.log"
    operator = scenario.start_operator(env.kubeconfig, log, [namespace], prometheus=env.prometheus)
    print(f"namespace {namespace}; operator log {log}", flush=True)
    objects = client.CustomObjectsApi(env.api)

    def reading() -> dict[str, float]:
        """Requests so far, by method (the Events are the POSTs)."""
        return operator.requests()

    def status(name: str) -> dict[str, Any]:
        operator.check()
        obj: Any = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return dict(obj.get("status") or {})

    weights = [round(100 * (i + 1) / args.steps) for i in range(args.steps)]
    steps: list[dict[str, Any]] = []
    for w in weights:
        if steps:
            steps.append({"pause": {"duration": args.hold}})
        steps.append({"setWeight": w})
    try:
        scenario.service_pair(env, namespace, APP)
        readings = [reading()]
        env.apply(namespace, scenario.rollout(APP, steps=steps))
        for k, w in enumerate(weights[:-1]):
            # While it holds after weight k, the step is the pause after it.
            scenario.wait_for(
                f"the hold after {w}%",
                partial(status, APP),
                partial(holding_at, 2 * k + 1),
                60,
            )
            time.sleep(SETTLE_S)
            readings.append(reading())
            print(f"holding at {w}%: {sum(readings[-1].values()):.0f} requests so far",
                  flush=True)  # fmt: skip
        scenario.wait_for(
            "Succeeded", lambda: status(APP).get("phase"), lambda p: p == "Succeeded", 60
        )
        readings.append(scenario.settled(reading))  # the last Events
        print(f"Succeeded; measuring {IDLE_S:g}s of idling", flush=True)
        time.sleep(IDLE_S)
        idle = requests_between(readings[-1], reading())

        # Rollouts that wait: for a person, and in a long hold.
        for app in WAITING:
            scenario.service_pair(env, namespace, app)
        env.apply(
            namespace,
            scenario.rollout(
                "wait-approval", steps=[{"setWeight": 50}, {"approval": {}}, {"setWeight": 100}]
            ),
            scenario.rollout(
                "wait-hold",
                steps=[{"setWeight": 50}, {"pause": {"duration": "10m"}}, {"setWeight": 100}],
            ),
        )
        scenario.wait_for(
            "wait-approval AwaitingApproval",
            lambda: status("wait-approval").get("phase"),
            lambda p: p == "AwaitingApproval",
            60,
        )
        scenario.wait_for(
            "wait-hold holding",
            partial(status, "wait-hold"),
            partial(holding_at, 1),
            60,
        )
        before = scenario.settled(reading)
        print(f"two Rollouts waiting; measuring {IDLE_S:g}s", flush=True)
        time.sleep(IDLE_S)
        waiting = requests_between(before, reading())
    finally:
        scenario.delete_namespace(env, namespace)
        operator.stop()

    per_step = [requests_between(a, b) for a, b in itertools.pairwise(readings)]
    counts = [sum(s.values()) for s in per_step]
    whole = requests_between(readings[0], readings[-1])
    total = sum(whole.values())
    middle = counts[1:-1]
    print()
    print(f"weight steps: {args.steps} ({' -> '.join(map(str, weights))}), "
          f"a {args.hold} hold after each but the last, no analysis, "
          "Gateway API router")  # fmt: skip
    print(f"API requests for the whole Rollout: {total:.0f}  {by_method(whole)}")
    print(f"per weight step: {total / args.steps:.1f}")
    print(f"  first weight, with the start (finalizer, Pending -> Progressing): {counts[0]:.0f}  "
          f"{by_method(per_step[0])}")  # fmt: skip
    if middle:
        verdict = "meets" if max(middle) <= TARGET_PER_STEP else "MISSES"
        methods = by_method(requests_between(readings[1], readings[-2]))
        print(f"  each later weight, hold to hold: {' '.join(f'{c:.0f}' for c in middle)}  "
              f"({methods})")  # fmt: skip
        print(f"    target <= {TARGET_PER_STEP} (status, router write, Event): {verdict}")
    print(f"  last weight and Succeeded: {counts[-1]:.0f}  {by_method(per_step[-1])}")
    print("  From segue_kube_requests_total; each Event is one POST.")
    print(f"while Succeeded, over {IDLE_S:g} s: {sum(idle.values()):.0f} requests, Events "
          "included (target 0)")  # fmt: skip
    print(f"while waiting (one Rollout at an approval step, one in a 10m hold), over {IDLE_S:g} s: "
          f"{sum(waiting.values()):.0f} requests, Events included (target 0)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
