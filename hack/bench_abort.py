#!/usr/bin/env python3
"""Benchmark: how fast does an abort pull traffic back while many Rollouts are active and
one of them waits on a Prometheus that never answers?

Brings all but one of ``--rollouts`` (50) Rollouts on the Gateway API router to an approval
step (at 10 % to 90 %), then measures the Kubernetes API requests the operator makes while
they wait (10 s). Then adds the last Rollout, whose Prometheus is a loopback server that
accepts connections and never answers (16 gates, timeout 30s, a round every second), and
aborts the 49 others: first one at a time, then (after ``segue.dev/retry`` brought them back
to their approval steps) all at once. Each abort is timed from the ``segue.dev/abort``
annotation write to the HTTPRoute reading weight 0, both as seen by watches (and from
sending the write). Prints p50/p99 per mode.

    python hack/bench_abort.py --rollouts 50
"""

from __future__ import annotations

import argparse
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from kubernetes import client

from segue import GROUP, PLURAL, VERSION
from segue_testkit import scenario
from segue_testkit.scenario import ObjectWatch, new_weight, spread

TARGET_P99_S: Final = 1.0
HANG: Final = "hang"
IDLE_S: Final = 10.0
MODES: Final = ("sequential", "burst")
ABORT: Final = "segue.dev/abort"


def weight_of(i: int) -> int:
    return 10 * (1 + i % 9)


def at_weight(weight: int, route: dict[str, Any]) -> bool:
    return new_weight(route) == weight


def has_abort(rollout: dict[str, Any]) -> bool:
    return ABORT in ((rollout.get("metadata") or {}).get("annotations") or {})


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def in_phase(wanted: str, obj: dict[str, Any]) -> bool:
    return phase(obj) == wanted


@dataclass
class Aborts:
    """One mode's measurements."""

    mode: str
    latencies: dict[str, float] = field(default_factory=dict)  # write seen -> route at 0
    from_send: dict[str, float] = field(default_factory=dict)  # PATCH sent -> route at 0
    spent: dict[str, float] = field(default_factory=dict)  # requests, by method


class Bench:
    def __init__(self, env: scenario.Env, namespace: str, operator: scenario.Operator) -> None:
        self.env, self.ns, self.operator = env, namespace, operator
        self.objects = client.CustomObjectsApi(env.api)
        self.rollouts = ObjectWatch(
            self.objects.list_namespaced_custom_object,
            (GROUP, VERSION, namespace, PLURAL),
            guard=operator.check,
        ).start()
        self.routes = ObjectWatch(
            self.objects.list_namespaced_custom_object,
            ("gateway.networking.k8s.io", "v1", namespace, "httproutes"),
            guard=operator.check,
        ).start()
        self.deployments = ObjectWatch(
            client.AppsV1Api(env.api).list_namespaced_deployment, (namespace,)
        ).start()

    def stop(self) -> None:
        for stream in (self.rollouts, self.routes, self.deployments):
            stream.stop()

    def annotate(self, app: str, key: str, value: str) -> float:
        """Write one annotation; returns when it was sent (Unix time)."""
        sent = time.time()
        self.objects.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, app, {"metadata": {"annotations": {key: value}}}
        )
        return sent

    def requests(self, apps: list[str]) -> dict[str, float]:
        return self.operator.requests()

    def waiting_at_approval(self, apps: list[str], after: float = 0.0) -> None:
        for i, app in enumerate(apps):
            self.rollouts.wait(
                f"{app} AwaitingApproval",
                app,
                partial(in_phase, "AwaitingApproval"),
                after,
                timeout=120,
            )
            self.routes.wait(
                f"{app} at {weight_of(i)}%", app, partial(at_weight, weight_of(i)), timeout=30
            )

    def abort_all(self, apps: list[str], mode: str, gap_s: float) -> Aborts:
        result = Aborts(mode)
        before = scenario.settled(lambda: self.requests(apps))

        def measure(n: int, app: str, sent: float) -> None:
            # The write is done when a watch shows it (the operator's watch sees it then too);
            # sending it can queue in this process and in the API server.
            written = self.rollouts.wait(
                f"{app}'s abort annotation", app, has_abort, sent, timeout=60
            ).at
            zero = self.routes.wait(
                f"{app} at 0%", app, lambda r: new_weight(r) == 0, sent, timeout=60
            ).at
            result.latencies[app] = zero - written
            result.from_send[app] = zero - sent
            print(f"[{mode}] abort {n:>2}/{len(apps)} {app}: route at 0% "
                  f"{result.latencies[app]:.3f}s after the annotation write "
                  f"({result.from_send[app]:.3f}s after sending it)", flush=True)  # fmt: skip

        if mode == "burst":
            with ThreadPoolExecutor(16) as pool:
                sent = list(pool.map(lambda app: self.annotate(app, ABORT, mode), apps))
            for n, (app, at) in enumerate(zip(apps, sent, strict=True), 1):
                measure(n, app, at)
        else:
            for n, app in enumerate(apps, 1):
                measure(n, app, self.annotate(app, ABORT, mode))
                time.sleep(gap_s)
        for app in apps:
            self.rollouts.wait(
                f"{app} RolledBack", app, partial(in_phase, "RolledBack"), timeout=60
            )
        after = scenario.settled(lambda: self.requests(apps))  # the last Events and removals
        result.spent = scenario.requests_between(before, after)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=50, help="active Rollouts in all")
    parser.add_argument("--gates", type=int, default=16, help="gates of the hanging Rollout")
    parser.add_argument("--timeout", default="30s", help="its analysis.prometheus.timeout")
    parser.add_argument("--interval", default="1s", help="its analysis.interval")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between sequential aborts")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, in order")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or not set(modes) <= set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    apps = [f"ab{i}" for i in range(args.rollouts - 1)]

    env = scenario.start_cluster()
    namespace = f"bench-abort-{secrets.token_hex(3)}"
    scenario.ensure_namespace(env, namespace)
    log = Path(env.info["logs"]) / f"operator-{namespace}.log"
    results: list[Aborts] = []
    with scenario.hanging_server() as (address, connections):
        # The hanging server is an inline address: the operator must allow it.
        operator = scenario.start_operator(
            env.kubeconfig,
            log,
            [namespace],
            prometheus=env.prometheus,
            extra_args=["--allow-prometheus-address", address],
        )
        print(f"namespace {namespace}; operator log {log}", flush=True)
        bench = Bench(env, namespace, operator)
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
                    bench.deployments.wait(
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
                bench.objects.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, scenario.rollout(app, steps=steps)
                )
            bench.waiting_at_approval(apps)
            print(f"{len(apps)} Rollouts waiting for approval at 10-90% "
                  f"({time.monotonic() - started:.1f}s)", flush=True)  # fmt: skip

            before = scenario.settled(lambda: bench.requests(apps))
            time.sleep(IDLE_S)
            waiting = scenario.requests_between(before, bench.requests(apps))
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
            bench.objects.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                scenario.rollout(HANG, steps=hang_steps, analysis=analysis),
            )
            bench.routes.wait(f"{HANG} at 10%", HANG, lambda r: new_weight(r) == 10, timeout=60)
            scenario.wait_for(
                "the hanging Prometheus to hold connections", connections, bool, timeout=30
            )
            time.sleep(3)  # its rounds are now stuck on the hanging server
            print(f"{HANG}: {phase(bench.rollouts.latest(HANG) or {})} at 10% with "
                  f"{args.gates} gates on {address} (timeout {args.timeout}); "
                  f"{connections()} connections held open", flush=True)  # fmt: skip

            for n, mode in enumerate(modes):
                if n:
                    retried = time.time()
                    for app in apps:
                        bench.annotate(app, "segue.dev/retry", mode)
                    bench.waiting_at_approval(apps, after=retried)
                    print(f"{len(apps)} Rollouts retried, waiting for approval again "
                          f"({time.time() - retried:.1f}s)", flush=True)  # fmt: skip
                how = "all at once" if mode == "burst" else f"one at a time, {args.gap:g}s apart"
                print(f"aborting {len(apps)} Rollouts, {how}", flush=True)
                results.append(bench.abort_all(apps, mode, args.gap))
            hang_state = (
                f"{HANG} still {phase(bench.rollouts.latest(HANG) or {})} at "
                f"{new_weight(bench.routes.latest(HANG) or {})}%, "
                f"{connections()} connections to the hanging server so far"
            )
        finally:
            bench.stop()
            scenario.delete_namespace(env, namespace)
            operator.stop()

    print()
    print(f"{len(apps) + 1} active Rollouts on the Gateway API router, {len(apps)} waiting for "
          f"approval at 10-90%; {HANG} on a Prometheus that accepts and never answers "
          f"({args.gates} gates, timeout {args.timeout}, interval {args.interval}); "
          f"{hang_state}")  # fmt: skip
    print(f"abort: annotation write -> HTTPRoute reads weight 0, both as seen by watches "
          f"(target p99 <= {TARGET_P99_S:g}s):")  # fmt: skip
    for r in results:
        values = list(r.latencies.values())
        verdict = "meets" if scenario.percentile(values, 99) <= TARGET_P99_S else "MISSES"
        print(f"  {r.mode:<10} {spread(values)}  {verdict}")
        print(f"  {'':<10} from sending the PATCH: {spread(list(r.from_send.values()))}")
    print(f"Kubernetes API requests: {len(apps)} Rollouts waiting for approval, over {IDLE_S:g}s: "
          f"{sum(waiting.values()):.0f} (target 0; {scenario.by_method(waiting)})")  # fmt: skip
    for r in results:
        print(f"  per abort, {r.mode}: {sum(r.spent.values()) / len(apps):.1f} "
              f"({scenario.by_method(r.spent)}; {HANG}'s own writes in the PATCH "
              "count)")  # fmt: skip
    print("  Events are posted by kopf's own client and are not counted by "
          "segue_kube_requests_total; counted here from the Event objects about the "
          "Rollouts.")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
