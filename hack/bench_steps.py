#!/usr/bin/env python3
"""Benchmark: how long does a weight step take beyond its hold, on each router?

Runs Rollouts on the plan 25/50/75/100 with a hold after each weight (5 s by default) and no
analysis, on the replicas router (KWOK pods) and on the Gateway API router: one run with
several Rollouts started together (their holds end at the same moment), one with them
started a fraction of a hold apart (no two steps at once).

For every hold it measures the step overhead: from the hold's end (the time the previous
weight was confirmed, from status.history, plus the hold) to the router confirming the next
weight (the next WeightSet entry in status.history), and when watches on the routes and
Deployments saw each stage in between. It also prints, per Rollout, the time from its
creation to Succeeded, and the Kubernetes API requests per weight step (the operator's
segue_kube_requests_total, its Events included).

    python hack/bench_steps.py --rollouts 4
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from kubernetes import client

from segue import GROUP, PLURAL, VERSION
from segue.traffic.base import Json
from segue.traffic.replicas.router import ReplicasRouter, targets
from segue.workloads.deployments import DeploymentState
from segue_testkit import scenario
from segue_testkit.scenario import ObjectWatch, Seen, spread

WEIGHTS: Final = (25, 50, 75, 100)
LEGACY_PODS: Final = 4  # replicas router: 25 % steps are whole pods
TARGET_P99_S: Final = 0.5
ROUTERS: Final = ("replicas", "gatewayAPI")
MODES: Final = ("together", "staggered")
# Issue 8's figures, same cluster and plan, before the watch-driven shell.
BEFORE: Final = "before: 55.9s per Rollout on the replicas router (2 Rollouts); Argo Rollouts 14.6s"


def plan(hold: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for weight in WEIGHTS:
        if steps:
            steps.append({"pause": {"duration": hold}})
        steps.append({"setWeight": weight})
    return steps


class _View:
    """The two Deployments as the bench's watch last saw them, in the shape a router reads."""

    def __init__(self, deployments: dict[str, Json]) -> None:
        self._deployments = deployments

    def deployment(self, namespace: str, name: str) -> DeploymentState | None:
        body = self._deployments.get(name)
        return DeploymentState.from_body(body) if body else None

    def get(self, kind: str, namespace: str, name: str) -> Json | None:
        return None


def replicas_weight(namespace: str, app: str, legacy: Json, new: Json, asked: int) -> int:
    """What the replicas router, asked for ``asked``, reads from these two Deployments (its
    own code, no I/O)."""
    view = _View({f"{app}-v1": legacy, f"{app}-v2": new})
    router = ReplicasRouter(view, None, namespace, f"{app}-v1", f"{app}-v2", asked=asked)  # type: ignore[arg-type]
    return router.read_weight()


@dataclass
class Step:
    """One hold and the weight step after it, in Unix times."""

    hold_end: float
    confirmed: float  # the WeightSet entry in status.history
    # What the bench's watches saw in between, in order: when the operator asked the router
    # for the weight and, on the replicas router, when each side got there.
    marks: dict[str, float | None] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        return self.confirmed - self.hold_end


@dataclass
class Result:
    router: str
    name: str
    total: float  # creation -> Succeeded
    first: float  # creation -> the first weight confirmed
    steps: list[Step] = field(default_factory=list)


class Bench:
    def __init__(
        self,
        env: scenario.Env,
        namespace: str,
        operator: scenario.Operator,
        hold_s: float,
        hold: str,
    ) -> None:
        self.env, self.ns, self.hold_s, self.hold = env, namespace, hold_s, hold
        self.objects = client.CustomObjectsApi(env.api)
        self.rollouts = ObjectWatch(
            self.objects.list_namespaced_custom_object,
            (GROUP, VERSION, namespace, PLURAL),
            guard=operator.check,
        ).start()
        self.deployments = ObjectWatch(
            client.AppsV1Api(env.api).list_namespaced_deployment, (namespace,)
        ).start()
        self.routes = ObjectWatch(
            self.objects.list_namespaced_custom_object,
            ("gateway.networking.k8s.io", "v1", namespace, "httproutes"),
            guard=operator.check,
        ).start()

    def stop(self) -> None:
        for w in (self.rollouts, self.deployments, self.routes):
            w.stop()

    # -- one run: several Rollouts at once on one router ---------------------------------

    def objects_for(self, router: str, app: str) -> list[dict[str, Any]]:
        if router == "replicas":
            return [
                scenario.deployment(f"{app}-v1", app, LEGACY_PODS, version="v1"),
                scenario.deployment(f"{app}-v2", app, 0, version="v2"),
            ]
        return [
            scenario.deployment(f"{app}-v1", app, 1, version="v1"),
            scenario.deployment(f"{app}-v2", app, 1, version="v2"),
            scenario.httproute(app, f"{app}-v1", f"{app}-v2"),
        ]

    def rollout_for(self, router: str, app: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"steps": plan(self.hold)}
        if router == "replicas":
            spec["traffic"] = {"replicas": {}}
        return scenario.rollout(app, **spec)

    def run(self, router: str, apps: list[str], label: str, stagger_s: float) -> list[Result]:
        started = time.monotonic()
        docs = [d for app in apps for d in self.objects_for(router, app)]
        self.env.apply(self.ns, *docs)
        pods = {"v1": LEGACY_PODS, "v2": 0} if router == "replicas" else {"v1": 1, "v2": 1}
        for app in apps:
            for version, n in pods.items():
                self.deployments.wait(
                    f"{app}-{version} ready",
                    f"{app}-{version}",
                    partial(ready, n),
                    timeout=120,
                )
        print(f"[{label}] {len(apps)} app pairs ready ({time.monotonic() - started:.1f}s); "
              f"starting {len(apps)} Rollouts {stagger_s:g}s apart", flush=True)  # fmt: skip
        created: dict[str, float] = {}
        start = time.monotonic()
        for i, app in enumerate(apps):
            time.sleep(max(0.0, start + i * stagger_s - time.monotonic()))
            created[app] = time.time()
            self.objects.create_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, self.rollout_for(router, app)
            )
        results = []
        for app in apps:
            done = self.rollouts.wait(
                f"Rollout {app} Succeeded",
                app,
                lambda r: (r.get("status") or {}).get("phase") == "Succeeded",
                timeout=120 + 4 * self.hold_s,
            )
            result = self.analyse(router, app, created[app], done)
            results.append(result)
            overheads = " ".join(f"{s.overhead:.3f}" for s in result.steps)
            print(f"[{label}] {app}: first weight {result.first:.2f}s and Succeeded "
                  f"{result.total:.2f}s after creation; "
                  f"hold end -> next weight confirmed: {overheads} s", flush=True)  # fmt: skip
        return results

    def analyse(self, router: str, app: str, created: float, done: Seen) -> Result:
        history = (done.obj.get("status") or {}).get("history") or []
        confirmed = scenario.confirmed_weights(history)
        succeeded = scenario.finished_at(history)
        if [w for _, w in confirmed] != list(WEIGHTS) or succeeded is None:
            raise SystemExit(f"{app}: unexpected history {history}")
        result = Result(router, app, succeeded - created, confirmed[0][0] - created)
        for (held_from, _), (at, weight) in itertools.pairwise(confirmed):
            marks = self.marks(router, app, weight, held_from)
            result.steps.append(Step(held_from + self.hold_s, at, marks))
        return result

    def marks(self, router: str, app: str, weight: int, after: float) -> dict[str, float | None]:
        """When the bench's watches first saw, after ``after``, each stage of the router
        reaching ``weight``."""
        if router == "gatewayAPI":
            seen = self.routes.first(app, lambda r: scenario.new_weight(r) == weight, after)
            return {"route written (router reads it)": seen.at if seen else None}
        legacy, new = f"{app}-v1", f"{app}-v2"
        want_legacy, want_new = targets(LEGACY_PODS, weight)
        asked = self.deployments.first(new, lambda d: replicas(d) == want_new, after)
        grown = self.deployments.first(
            new, lambda d: replicas(d) == want_new and ready(want_new, d), after
        )
        shrink = self.deployments.first(legacy, lambda d: replicas(d) == want_legacy, after)
        # Replay both Deployments' events in arrival order; the router reads the weight once
        # both are where it asked them to be.
        merged = sorted(
            [(s.at, "v1", s.obj) for s in self.deployments.events.get(legacy, [])]
            + [(s.at, "v2", s.obj) for s in self.deployments.events.get(new, [])],
            key=lambda e: e[0],
        )
        latest: dict[str, Json] = {}
        reads: float | None = None
        for at, side, obj in merged:
            latest[side] = obj
            if (
                at >= after
                and len(latest) == 2
                and replicas_weight(self.ns, app, latest["v1"], latest["v2"], weight) == weight
            ):
                reads = at
                break
        return {
            "weight asked (new scaled)": asked.at if asked else None,
            "new pods ready": grown.at if grown else None,
            "legacy scaled down": shrink.at if shrink else None,
            "router reads it": reads,
        }

    def cleanup_run(self, apps: list[str]) -> None:
        names = [f"rollout.segue.dev/{app}" for app in apps]
        self.env.kubectl("delete", "-n", self.ns, *names, "--timeout=60s", check=False)
        deployments = [f"deployment/{app}-{v}" for app in apps for v in ("v1", "v2")]
        self.env.kubectl("delete", "-n", self.ns, *deployments, "--wait=false", check=False)
        self.env.kubectl("delete", "-n", self.ns, "httproutes", "--all", "--wait=false",
                         check=False)  # fmt: skip


def ready(pods: int, deployment: Json) -> bool:
    return int((deployment.get("status") or {}).get("readyReplicas") or 0) == pods


def replicas(deployment: Json) -> int | None:
    value = (deployment.get("spec") or {}).get("replicas")
    return None if value is None else int(value)


def medians(steps: list[Step]) -> str:
    """Median time from the hold's end to each mark, then to the confirmation."""
    parts = []
    for mark in steps[0].marks if steps else {}:
        values = [at - s.hold_end for s in steps if (at := s.marks.get(mark)) is not None]
        parts.append(f"{mark} {statistics.median(values):.3f}s" if values else f"{mark} n/a")
    parts.append(f"confirmed {statistics.median(s.overhead for s in steps):.3f}s")
    return ", ".join(parts)


def timeline(step: Step) -> str:
    """One step's marks, from the hold's end."""
    parts = [f"{mark} {'n/a' if at is None else f'{at - step.hold_end:.3f}s'}"
             for mark, at in step.marks.items()]  # fmt: skip
    return ", ".join([*parts, f"confirmed {step.overhead:.3f}s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=4, help="Rollouts per run")
    parser.add_argument("--hold", default="5s", help="the pause after each weight")
    parser.add_argument("--routers", default=",".join(ROUTERS), help="comma-separated")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    args = parser.parse_args()
    hold_s = float(args.hold.removesuffix("s"))
    routers = [r for r in args.routers.split(",") if r]
    modes = [m for m in args.modes.split(",") if m]
    if not set(routers) <= set(ROUTERS) or not set(modes) <= set(MODES):
        parser.error(f"choose routers from {', '.join(ROUTERS)}, modes from {', '.join(MODES)}")
    stagger = {"together": 0.0, "staggered": hold_s / args.rollouts}

    env = scenario.start_cluster()
    namespace = f"bench-steps-{secrets.token_hex(3)}"
    scenario.ensure_namespace(env, namespace)
    log = Path(env.info["logs"]) / f"operator-{namespace}.log"
    operator = scenario.start_operator(env.kubeconfig, log, [namespace], prometheus=env.prometheus)
    print(f"namespace {namespace}; operator log {log}", flush=True)
    bench = Bench(env, namespace, operator, hold_s, args.hold)
    results: dict[tuple[str, str], list[Result]] = {}

    def counts(apps: list[str]) -> dict[str, float]:
        return operator.requests()

    requests: dict[str, dict[str, float]] = {r: {} for r in routers}
    try:
        for router in routers:
            short = {"replicas": "rep", "gatewayAPI": "gw"}[router]
            for mode in modes:
                apps = [f"{short}-{mode[:3]}-{i}" for i in range(args.rollouts)]
                before = counts(apps)
                results[router, mode] = bench.run(router, apps, f"{router}, {mode}", stagger[mode])
                after = scenario.settled(partial(counts, apps))  # the last Events
                spent = scenario.requests_between(before, after)
                for method, n in spent.items():
                    requests[router][method] = requests[router].get(method, 0) + n
                bench.cleanup_run(apps)
    finally:
        bench.stop()
        scenario.delete_namespace(env, namespace)
        operator.stop()

    print()
    print(f"plan {'/'.join(map(str, WEIGHTS))} with three {args.hold} holds, no analysis; "
          f"{args.rollouts} Rollouts per run, started together or "
          f"{stagger['staggered']:g}s apart (staggered: no two holds end at once)")  # fmt: skip
    print(f"step overhead: hold end -> router confirms the next weight "
          f"(status.history; target p99 <= {TARGET_P99_S}s with KWOK pods)")  # fmt: skip
    for (router, mode), rs in results.items():
        steps = [s for r in rs for s in r.steps]
        overheads = [s.overhead for s in steps]
        p99 = scenario.percentile(overheads, 99)
        verdict = "meets" if p99 <= TARGET_P99_S else "MISSES"
        print(f"  {router + ', ' + mode:<22} {spread(overheads)}  {verdict}")
        print(f"  {'':<22} medians from the hold's end: {medians(steps)}")
        slowest = max(steps, key=lambda s: s.overhead)
        print(f"  {'':<22} slowest step: {timeline(slowest)}")
    print(f"time from creation to Succeeded, per Rollout ({len(WEIGHTS) - 1} holds of "
          f"{args.hold} = {hold_s * (len(WEIGHTS) - 1):g}s; {BEFORE}):")  # fmt: skip
    for (router, mode), rs in results.items():
        listed = " ".join(f"{r.total:.1f}" for r in rs)
        first = statistics.median(r.first for r in rs)
        print(f"  {router + ', ' + mode:<22} {listed} s  (creation -> first weight confirmed: "
              f"median {first:.2f}s)")  # fmt: skip
    print("Kubernetes API requests per weight step, whole Rollouts (start, 4 weights, "
          "Succeeded):")  # fmt: skip
    for router in routers:
        n_steps = sum(len(rs) for (r, _), rs in results.items() if r == router) * len(WEIGHTS)
        total = sum(requests[router].values())
        print(f"  {router:<22} {total / n_steps:.1f}  ({total:.0f} for {n_steps} weight steps: "
              f"{scenario.by_method(requests[router])})")  # fmt: skip
    print("  From segue_kube_requests_total; the Events are its POSTs. "
          "One weight step on its own: hack/count_requests.py.")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
