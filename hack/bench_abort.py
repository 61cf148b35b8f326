#!/usr/bin/env python3
"""Benchmark: how fast does an abort pull traffic back while many Rollouts are active and
one of them waits on a Prometheus that never answers?

Brings all but one of ``--rollouts`` (50) Rollouts on the Gateway API router to an approval
step (at 10 % to 90 %), then measures the Kubernetes API requests the operator makes while
they wait (10 s). Then adds the last Rollout, whose Prometheus is a loopback server that
accepts connections and never answers (16 gates, timeout 30s, a round every second), and
aborts the 49 others one at a time (``--burst``: all at once): from writing
``segue.dev/abort`` to the HTTPRoute reading weight 0, as seen by a watch on the routes.
Prints p50/p99.

    python hack/bench_abort.py --rollouts 50
"""

from __future__ import annotations

import argparse
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Final

from kubernetes import client

import scenario
from scenario import ObjectWatch, new_weight, spread
from segue import GROUP, PLURAL, VERSION

TARGET_P99_S: Final = 1.0
HANG: Final = "hang"
IDLE_S: Final = 10.0


def weight_of(i: int) -> int:
    return 10 * (1 + i % 9)


def at_weight(weight: int, route: dict[str, Any]) -> bool:
    return new_weight(route) == weight


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=50, help="active Rollouts in all")
    parser.add_argument("--gates", type=int, default=16, help="gates of the hanging Rollout")
    parser.add_argument("--timeout", default="30s", help="its analysis.prometheus.timeout")
    parser.add_argument("--interval", default="1s", help="its analysis.interval")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between aborts")
    parser.add_argument("--burst", action="store_true", help="abort all at once")
    args = parser.parse_args()
    apps = [f"ab{i}" for i in range(args.rollouts - 1)]

    env = scenario.start_cluster()
    namespace = f"bench-abort-{secrets.token_hex(3)}"
    scenario.ensure_namespace(env, namespace)
    log = Path(env.info["logs"]) / f"operator-{namespace}.log"
    operator = scenario.start_operator(env.kubeconfig, log, [namespace], prometheus=env.prometheus)
    print(f"namespace {namespace}; operator log {log}", flush=True)
    objects = client.CustomObjectsApi(env.api)
    rollouts = ObjectWatch(
        objects.list_namespaced_custom_object,
        (GROUP, VERSION, namespace, PLURAL),
        guard=operator.check,
    ).start()
    routes = ObjectWatch(
        objects.list_namespaced_custom_object,
        ("gateway.networking.k8s.io", "v1", namespace, "httproutes"),
        guard=operator.check,
    ).start()
    deployments = ObjectWatch(
        client.AppsV1Api(env.api).list_namespaced_deployment, (namespace,)
    ).start()

    latencies: dict[str, float] = {}
    with scenario.hanging_server() as (address, connections):
        try:
            started = time.monotonic()
            docs = []
            for app in [*apps, HANG]:
                docs += [
                    scenario.deployment(f"{app}-v1", app, 1, version="v1"),
                    scenario.deployment(f"{app}-v2", app, 1, version="v2"),
                    scenario.httproute(app, f"{app}-v1", f"{app}-v2"),
                ]
            env.apply(namespace, *docs)
            for app in [*apps, HANG]:
                for version in ("v1", "v2"):
                    deployments.wait(
                        f"{app}-{version} ready",
                        f"{app}-{version}",
                        lambda d: (d.get("status") or {}).get("readyReplicas") == 1,
                        timeout=180,
                    )
            print(f"{len(apps) + 1} Deployment pairs and HTTPRoutes ready "
                  f"({time.monotonic() - started:.1f}s)", flush=True)  # fmt: skip

            started = time.monotonic()
            for i, app in enumerate(apps):
                steps = [{"setWeight": weight_of(i)}, {"approval": {}}, {"setWeight": 100}]
                objects.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, scenario.rollout(app, steps=steps)
                )
            for i, app in enumerate(apps):
                rollouts.wait(
                    f"{app} AwaitingApproval",
                    app,
                    lambda r: phase(r) == "AwaitingApproval",
                    timeout=120,
                )
                routes.wait(
                    f"{app} at its weight", app, partial(at_weight, weight_of(i)), timeout=30
                )
            print(f"{len(apps)} Rollouts waiting for approval at 10-90% "
                  f"({time.monotonic() - started:.1f}s)", flush=True)  # fmt: skip

            time.sleep(1)  # the last Events and writes of getting there
            before = scenario.with_events(env, namespace, operator.requests(), apps)
            time.sleep(IDLE_S)
            after = scenario.with_events(env, namespace, operator.requests(), apps)
            waiting = scenario.requests_between(before, after)
            print(f"over {IDLE_S:g}s of waiting: {sum(waiting.values()):.0f} requests",
                  flush=True)  # fmt: skip

            gates = [
                {"name": f"g{i}", "query": f"up{{g='{i}'}}", "max": 1} for i in range(args.gates)
            ]
            analysis = {
                "interval": args.interval,
                "prometheus": {"address": address, "timeout": args.timeout},
                "gates": gates,
            }
            hang_steps = [{"setWeight": 10}, {"approval": {}}, {"setWeight": 100}]
            objects.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                scenario.rollout(HANG, steps=hang_steps, analysis=analysis),
            )
            routes.wait(f"{HANG} at 10%", HANG, lambda r: new_weight(r) == 10, timeout=60)
            scenario.wait_for(
                "the hanging Prometheus to hold connections", connections, bool, timeout=30
            )
            time.sleep(3)  # its rounds are now stuck on the hanging server
            hang = rollouts.latest(HANG) or {}
            print(f"{HANG}: {phase(hang)} at 10% with {args.gates} gates on {address} "
                  f"(timeout {args.timeout}); {connections()} connections held open",
                  flush=True)  # fmt: skip

            mode = "all at once" if args.burst else f"one at a time, {args.gap:g}s apart"
            print(f"aborting {len(apps)} Rollouts, {mode}", flush=True)
            before = scenario.with_events(env, namespace, operator.requests(), apps)

            def abort(app: str) -> float:
                at = time.time()
                objects.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, app,
                    {"metadata": {"annotations": {"segue.dev/abort": "benchmark"}}},
                )  # fmt: skip
                return at

            def measure(n: int, app: str, written: float) -> None:
                seen = routes.wait(
                    f"{app} at 0%", app, lambda r: new_weight(r) == 0, written, timeout=60
                )
                latencies[app] = seen.at - written
                print(f"abort {n:>2}/{len(apps)} {app}: route at 0% "
                      f"{latencies[app]:.3f}s after the annotation write", flush=True)  # fmt: skip

            if args.burst:
                with ThreadPoolExecutor(16) as pool:
                    written = list(pool.map(abort, apps))
                for n, (app, at) in enumerate(zip(apps, written, strict=True), 1):
                    measure(n, app, at)
            else:
                for n, app in enumerate(apps, 1):
                    measure(n, app, abort(app))
                    time.sleep(args.gap)
            for app in apps:
                rollouts.wait(
                    f"{app} RolledBack", app, lambda r: phase(r) == "RolledBack", timeout=60
                )
            time.sleep(1)
            after = scenario.with_events(env, namespace, operator.requests(), apps)
            spent = scenario.requests_between(before, after)
            hang = rollouts.latest(HANG) or {}
            hang_state = (
                f"{HANG} still {phase(hang)} at {new_weight(routes.latest(HANG) or {})}%, "
                f"{connections()} connections to the hanging server so far"
            )
        finally:
            for stream in (rollouts, routes, deployments):
                stream.stop()
            scenario.delete_namespace(env, namespace)
            operator.stop()

    values = list(latencies.values())
    p99 = scenario.percentile(values, 99)
    print()
    print(f"{len(apps) + 1} active Rollouts on the Gateway API router, {len(apps)} waiting for "
          f"approval at 10-90%; {HANG} on a Prometheus that accepts and never answers "
          f"({args.gates} gates, timeout {args.timeout}, interval {args.interval})")  # fmt: skip
    print(f"abort ({mode}): annotation write -> HTTPRoute reads weight 0:  {spread(values)}")
    print(f"target p99 <= {TARGET_P99_S:g}s: {'meets' if p99 <= TARGET_P99_S else 'MISSES'};  "
          f"{hang_state}")  # fmt: skip
    print(f"Kubernetes API requests: {len(apps)} Rollouts waiting for approval, over {IDLE_S:g}s: "
          f"{sum(waiting.values()):.0f} (target 0; {scenario.by_method(waiting)});  "
          f"per abort: {sum(spent.values()) / len(apps):.1f} ({scenario.by_method(spent)}; "
          f"{HANG}'s own writes in the PATCH count)")  # fmt: skip
    print("  Events are posted by kopf's own client and are not counted by "
          "segue_kube_requests_total; counted here from the Event objects about the "
          "Rollouts.")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
