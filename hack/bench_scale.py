#!/usr/bin/env python3
"""Benchmark: many concurrent Rollouts on one operator (or on shards of it).

Creates N Rollouts at once (one POST each from a pool of threads) on the plan 25/50/75/100
with a hold after each weight but the last (5 s by default), and waits for all of them to
succeed. On the Gateway API router every Rollout has an HTTPRoute of its own and all of
them share one Deployment pair (one KWOK pod per version), so no pod starts during the
run; on the replicas router every Rollout has its own pair (4 legacy pods), and the floor
is the same plan's scale writes made directly, with no operator, the Deployment controller
and KWOK creating and removing the pods (``--floor``). On the Gateway API router the floor
(``--floor``) is the plan's route writes made directly on HTTPRoutes of their own, one
thread per route with the holds between: what the API server takes with no operator.

Rollouts are created as where the chart is installed: its MutatingAdmissionPolicy puts the
operator's finalizer on them (bound to the run's namespace only).

It prints, per N:

- all done: from the first Rollout created to the last one Succeeded, and per Rollout
  from its creation to Succeeded (target: within the holds + 2 s);
- step overhead p50/p99: from a hold's end to the router confirming the next weight
  (status.history);
- from creation to the first weight confirmed, and the part of it before the operator's
  first decision (history's first entry): the rest is the first step's writes;
- the operator's CPU seconds over the run and its peak RSS (/proc: utime+stime, VmHWM):
  with the N Rollouts of the plan, and, with ``--abort``, once N more were added (the first
  N stay, Succeeded, so the operator then holds 2N);
- Kubernetes API requests per Rollout (segue_kube_requests_total and the Events about the
  Rollouts), and while they sit Succeeded;
- with ``--gates 2``: two gates per Rollout on a traffic simulator with a static split,
  scraped by Prometheus, and Prometheus queries per Rollout-minute (Prometheus' own
  prometheus_http_requests_total);
- with ``--abort``: N more Rollouts waiting at an approval step at 25 % (what waiting costs:
  requests and queries), then segue.dev/abort on all of them at once, and the abort latency
  from the annotation (as a watch saw it) to the HTTPRoute at weight 0 (a route watch);
- with ``--shards K``: K operator processes started with ``--shard i/K`` (when the
  operator has that flag; otherwise the row says it is skipped).

    python hack/bench_scale.py --rollouts 100,1000 --gates 2 --abort --floor
    python hack/bench_scale.py --rollouts 10,100 --router replicas --floor

Where the API server's CPU goes (at N = 1,000 it, not the operator, sets the pace): start the
cluster with ``SEGUE_APISERVER_PROFILING=1`` and, while the Rollouts step, take a profile and
read it by handler (``customresource.(*StatusREST).Update`` is the Rollouts' status writes)::

    kubectl get --raw '/debug/pprof/profile?seconds=40' > apiserver.pprof
    go tool pprof -top -cum apiserver.pprof
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import yaml
from kubernetes import client

from segue import GROUP, PLURAL, VERSION
from segue.traffic.replicas.router import targets
from segue.workloads.deployments import DeploymentState
from segue_testkit import cluster, scenario
from segue_testkit.cluster.nodes import fake_nodes_manifest
from segue_testkit.cluster.settings import NODE_COUNT
from segue_testkit.scenario import ObjectWatch, Progress, percentile

CHART: Final = Path(__file__).resolve().parents[1] / "charts" / "segue"
WEIGHTS: Final = (25, 50, 75, 100)
LEGACY_PODS: Final = 4  # replicas router: 25 % steps are whole pods
PODS_PER_NODE: Final = 100  # of the 110 a KWOK node takes, so a few are left over
SHARED: Final = "scale"  # the Deployment pair all Gateway API Rollouts share
ROUTERS: Final = ("gatewayAPI", "replicas")
IDLE_S: Final = 10.0
ABORT: Final = "segue.dev/abort"
# The targets.
MARGIN_S: Final = 2.0  # Gateway API router: all done within the holds + this
FLOOR_FACTOR: Final = 1.1  # replicas router: all done within this times the floor
TARGET_REQUESTS: Final = 20.0  # per Rollout
TARGET_P99_S: Final = 1.0  # step overhead and abort, at N = 1,000
TARGET_RSS_MIB: Final = 300.0
TARGET_CPU_100_S: Final = 16.0  # operator CPU at N = 100


def plan(hold: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for weight in WEIGHTS:
        if steps:
            steps.append({"pause": {"duration": hold}})
        steps.append({"setWeight": weight})
    return steps


def gates(count: int, interval: str) -> dict[str, Any] | None:
    """``count`` gates (0 to 2) on the simulator's series, which pass: the error-rate and
    latency templates, as most Rollouts use them, so the operator batches their queries
    (one per template and tick, whatever the number of Rollouts)."""
    if not count:
        return None
    labels = {"app": SHARED, "window": "30s"}
    templates = [("errors", "error-rate"), ("latency", "latency")]
    return {
        "interval": interval,
        "gates": [{"name": n, "template": t, "labels": labels} for n, t in templates[:count]],
    }


def phase(obj: dict[str, Any] | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("phase")


def history(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(((obj or {}).get("status") or {}).get("history") or [])


def state(body: dict[str, Any]) -> DeploymentState:
    return DeploymentState.from_body(body)


def at_replicas(n: int, body: dict[str, Any]) -> bool:
    s = state(body)
    return s.desired == n and s.settled


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {percentile(values, 50):.3f}s p99 {percentile(values, 99):.3f}s"


def operator_supports(flag: str) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "segue", "--help"], capture_output=True, text=True, check=False
    )
    return flag in out.stdout


@dataclass
class Row:
    """One run's figures."""

    label: str
    n: int
    all_done_s: float = 0.0
    per_rollout: list[float] = field(default_factory=list)  # creation -> Succeeded
    overheads: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    rss_mib: float = 0.0  # peak with the plan's N Rollouts
    rss_all_mib: float = 0.0  # peak over the whole run (2N with --abort)
    requests: dict[str, float] = field(default_factory=dict)
    idle_requests: float = 0.0
    idle_queries: float = 0.0
    queries_per_rollout_minute: float | None = None
    floor_s: float | None = None
    floor_per_route: list[float] = field(default_factory=list)
    # Gateway API floor: each route write's time, sent -> answered (a step's least overhead).
    floor_writes: list[float] = field(default_factory=list)
    # Creation -> first weight confirmed; last weight confirmed -> Succeeded.
    starts: list[float] = field(default_factory=list)
    # Creation -> the operator's first decision (history's first entry): the part of a
    # start before its first writes.
    reactions: list[float] = field(default_factory=list)
    finishes: list[float] = field(default_factory=list)
    aborts: list[float] = field(default_factory=list)
    waiting_requests: dict[str, float] | None = None
    waiting_queries: float | None = None
    abort_requests: dict[str, float] = field(default_factory=dict)
    # The benchmark's own abort annotations, sent -> answered: one write during the burst.
    annotation_writes: list[float] = field(default_factory=list)
    annotation_span_s: float = 0.0  # the first sent -> the last answered
    skipped: str = ""


class Run:
    """One N on one router: its namespace, objects, watches and operator processes."""

    def __init__(self, env: scenario.Env, args: argparse.Namespace, n: int, shards: int) -> None:
        self.env, self.args, self.n, self.shards = env, args, n, shards
        self.replicas = args.router == "replicas"
        self.hold_s = float(args.hold.removesuffix("s"))
        self.ns = f"bench-scale-{secrets.token_hex(3)}"
        self.api = scenario.pooled_client(env.kubeconfig, args.threads)
        self.objects = client.CustomObjectsApi(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.operators: list[scenario.Operator] = []
        # How long queued Events may take to be posted: 1,000 at most, 20 a second, or as
        # few as 4 a second (the events lane's threads) when each write takes a second.
        self.drain_s = 30.0 + min(self.n * 7, 1000) / 4
        self.row = Row(f"{args.router}, {args.gates} gates, {shards or 1} operator(s)", n)

    # -- set-up ------------------------------------------------------------------------

    def start_watches(self) -> None:
        self.rollouts = ObjectWatch(
            self.objects.list_namespaced_custom_object,
            (GROUP, VERSION, self.ns, PLURAL),
            guard=self.check,
            max_s=3600,
        ).start()
        self.deployments = ObjectWatch(
            self.apps.list_namespaced_deployment, (self.ns,), max_s=3600
        ).start()
        self.routes = ObjectWatch(
            self.objects.list_namespaced_custom_object,
            ("gateway.networking.k8s.io", "v1", self.ns, "httproutes"),
            max_s=3600,
        ).start()

    def check(self) -> None:
        for op in self.operators:
            op.check()

    def names(self, prefix: str) -> list[str]:
        return [f"{prefix}{i}" for i in range(self.n)]

    def create(self, label: str, docs: list[dict[str, Any]]) -> None:
        bar = Progress(f"N={self.n} {label}", len(docs))
        scenario.create_all(self.api, self.ns, docs, self.args.threads, on_done=bar.update)
        bar.close()

    def finalizer_policy(self) -> list[dict[str, Any]]:
        """The chart's finalizer policy (Rollouts are created with the operator's finalizer,
        as where the chart is installed), bound to this run's namespace only."""
        values = {
            "fullnameOverride": self.ns,
            "admission": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.ns}}
            },
        }
        out = subprocess.run(
            [str(cluster.build() / "helm"), "template", "segue", str(CHART), "-s",
             "templates/admission.yaml", "-f", "-"],
            input=yaml.safe_dump(values), capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip
        return [
            d
            for d in yaml.safe_load_all(out)
            if d
            and d["kind"].startswith("MutatingAdmissionPolicy")
            and d["metadata"]["name"].endswith("-finalizer")
        ]

    def prepare(self) -> None:
        scenario.ensure_namespace(self.env, self.ns)
        self.policy = self.finalizer_policy()
        self.env.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(self.policy))
        self.start_watches()
        # A new policy takes a moment to be enforced: until a dry-run Rollout has the finalizer.
        probe = self.rollout_doc("probe", plan(self.args.hold))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            made: Any = self.objects.create_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, probe, dry_run="All"
            )
            if made["metadata"].get("finalizers"):
                break
            time.sleep(0.5)
        else:
            print("the finalizer policy is not enforced: the operator adds the finalizers")
        if self.replicas:
            # KWOK nodes take 110 pods each: enough of them for every pair at its peak.
            nodes = -(-self.n * (LEGACY_PODS + 1) // PODS_PER_NODE)
            if nodes > NODE_COUNT:
                self.env.kubectl("apply", "-f", "-", input=fake_nodes_manifest(nodes))
            docs = [
                d
                for app in self.names("r")
                for d in (
                    scenario.deployment(f"{app}-v1", app, LEGACY_PODS, version="v1"),
                    scenario.deployment(f"{app}-v2", app, 0, version="v2"),
                )
            ]
            self.create("Deployments", docs)
            self.wait_all(
                "legacy pods ready",
                [f"{app}-v1" for app in self.names("r")],
                self.deployments,
                partial(at_replicas, LEGACY_PODS),
                timeout=120 + self.n,
            )
            return
        routes = self.names("s") + (self.names("a") if self.args.abort else [])
        routes += self.names("f") if self.args.floor else []
        self.create(
            "Deployments and HTTPRoutes",
            [
                scenario.deployment(f"{SHARED}-v1", SHARED, 1, version="v1"),
                scenario.deployment(f"{SHARED}-v2", SHARED, 1, version="v2"),
                *(scenario.httproute(r, f"{SHARED}-v1", f"{SHARED}-v2") for r in routes),
            ],
        )
        self.wait_all(
            "the shared pair ready",
            [f"{SHARED}-v1", f"{SHARED}-v2"],
            self.deployments,
            partial(at_replicas, 1),
            timeout=120,
        )

    def wait_all(
        self,
        what: str,
        names: list[str],
        watch: ObjectWatch,
        ok: Callable[[dict[str, Any]], bool],
        timeout: float,
        after: float = 0.0,
    ) -> dict[str, float]:
        """Wait until each of ``names`` has been ``ok`` at or after ``after``; returns when
        the watch first saw each."""
        bar = Progress(f"N={self.n} {what}", len(names))
        deadline = time.monotonic() + timeout
        seen: dict[str, float] = {}
        while True:
            for name in names:
                if name not in seen and (s := watch.first(name, ok, after)) is not None:
                    seen[name] = s.at
            bar.update(len(seen))
            if len(seen) == len(names):
                bar.close()
                return seen
            self.check()
            if time.monotonic() > deadline:
                bar.close()
                missing = [n for n in names if n not in seen][:5]
                raise TimeoutError(f"timed out waiting for {what}; e.g. {missing}")
            time.sleep(0.25)

    # -- the floor (Gateway API router) ------------------------------------------------

    def route_weight(self, api: client.CustomObjectsApi, name: str, weight: int) -> float:
        """Write one route's weights; returns the write's time, sent -> answered."""
        sent = time.monotonic()
        refs = [
            {"name": f"{SHARED}-v1", "port": 80, "weight": 100 - weight},
            {"name": f"{SHARED}-v2", "port": 80, "weight": weight},
        ]
        body = {"spec": {"rules": [{"backendRefs": refs}]}}
        api.patch_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.ns, "httproutes", name, body
        )
        return time.monotonic() - sent

    def route_floor_one(
        self, api: client.CustomObjectsApi, name: str
    ) -> tuple[float, float, list[float]]:
        """The plan's weights written to one route, with the holds; (first write sent, last
        write answered, each write's time)."""
        started = time.time()
        writes = []
        for k, weight in enumerate(WEIGHTS):
            if k:
                time.sleep(self.hold_s)
            writes.append(self.route_weight(api, name, weight))
        return started, time.time(), writes

    def route_floor(self) -> tuple[float, list[float], list[float]]:
        """All done (first write to last), each route's time, as the operator's run is
        measured, and each write's time, from the plan's writes alone."""
        names = self.names("f")
        api = client.CustomObjectsApi(scenario.pooled_client(self.env.kubeconfig, 64))
        bar = Progress(f"N={self.n} floor (no operator)", len(names))
        spans: list[tuple[float, float, list[float]]] = []
        with ThreadPoolExecutor(len(names)) as pool:
            for span in pool.map(partial(self.route_floor_one, api), names):
                spans.append(span)
                bar.update(len(spans))
        bar.close()
        first = min(a for a, _, _ in spans)
        return (
            max(b for _, b, _ in spans) - first,
            [b - a for a, b, _ in spans],
            [t for _, _, writes in spans for t in writes],
        )

    # -- the floor (replicas router) ---------------------------------------------------

    def scale(self, name: str, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(name, self.ns, {"spec": {"replicas": replicas}})

    def reach(self, name: str, replicas: int) -> None:
        """Scale ``name`` and wait until the watch sees it settled there."""
        sent = time.time()
        self.scale(name, replicas)
        self.deployments.wait(
            f"{name} at {replicas}", name, partial(at_replicas, replicas), sent, timeout=120
        )

    def floor_one(self, app: str) -> float:
        """The plan's weights as the replicas router writes them (grow first, then
        shrink), with the holds; returns when the last weight is in place."""
        for k, weight in enumerate(WEIGHTS):
            if k:
                time.sleep(self.hold_s)
            want_legacy, want_new = targets(LEGACY_PODS, weight)
            self.reach(f"{app}-v2", want_new)
            self.reach(f"{app}-v1", want_legacy)
        return time.time()

    def floor(self) -> float:
        apps = self.names("r")
        started = time.time()
        bar = Progress(f"N={self.n} floor (no operator)", len(apps))
        with ThreadPoolExecutor(len(apps)) as pool:
            ends = []
            for end in pool.map(self.floor_one, apps):
                ends.append(end)
                bar.update(len(ends))
        bar.close()
        # Back to where the Rollouts start: all legacy pods, no new one.
        with ThreadPoolExecutor(self.args.threads) as pool:
            list(pool.map(lambda app: self.scale(f"{app}-v2", 0), apps))
            list(pool.map(lambda app: self.scale(f"{app}-v1", LEGACY_PODS), apps))
        reset = time.time()
        for version, pods in (("v1", LEGACY_PODS), ("v2", 0)):
            self.wait_all(
                f"{version} back at {pods} pods",
                [f"{app}-{version}" for app in apps],
                self.deployments,
                partial(at_replicas, pods),
                timeout=120 + self.n,
                after=reset if version == "v1" else 0.0,
            )
        return max(ends) - started

    # -- the operator --------------------------------------------------------------------

    def start_operators(self) -> None:
        logs = Path(self.env.info["logs"])
        for i in range(max(1, self.shards)):
            extra = ["--shard", f"{i}/{self.shards}"] if self.shards else []
            # One Lease group: shard i elects through segue-bench-<i>, as the chart's
            # Deployments do through <leaseName>-<i>.
            if self.shards:
                extra += ["--leader-election-name", "segue-bench"]
            self.operators.append(
                scenario.start_operator(
                    self.env.kubeconfig,
                    logs / f"operator-{self.ns}-{i}.log",
                    [self.ns],
                    prometheus=self.env.prometheus,
                    extra_args=extra,
                )
            )
        print(f"namespace {self.ns}; operator logs {logs}/operator-{self.ns}-*.log", flush=True)

    def requests(self, names: list[str]) -> dict[str, float]:
        total: dict[str, float] = {}
        for op in self.operators:
            for method, v in op.requests().items():
                total[method] = total.get(method, 0) + v
        return total

    def cpu(self) -> float:
        return sum(scenario.cpu_seconds(op.proc.pid) for op in self.operators)

    def queries(self) -> float:
        return scenario.queries_served(self.env.prometheus)

    def rollout_doc(self, name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        analysis = gates(self.args.gates, self.args.interval)
        extra: dict[str, Any] = {"analysis": analysis} if analysis else {}
        if self.replicas:
            return scenario.rollout(name, steps=steps, traffic={"replicas": {}}, **extra)
        traffic = {
            "gatewayAPI": {
                "httpRoute": name,
                "legacyBackend": f"{SHARED}-v1",
                "newBackend": f"{SHARED}-v2",
            }
        }
        return scenario.rollout(SHARED, name=name, steps=steps, traffic=traffic, **extra)

    # -- the plan ------------------------------------------------------------------------

    def run_plan(self) -> None:
        names = self.names("r" if self.replicas else "s")
        row = self.row
        before = scenario.settled(partial(self.requests, names))
        cpu0, q0 = self.cpu(), self.queries()
        self.create("Rollouts", [self.rollout_doc(n, plan(self.args.hold)) for n in names])
        done = self.wait_all(
            "Rollouts Succeeded",
            names,
            self.rollouts,
            lambda r: phase(r) == "Succeeded",
            timeout=3 * self.hold_s + 300 + self.n,
        )
        finished = max(done.values())
        # Events queued during the run are still being posted at the events lane's rate:
        # they count to the run, not to idling.
        after = scenario.settled(partial(self.requests, names), quiet_s=2.0, timeout=self.drain_s)
        row.cpu_s = self.cpu() - cpu0
        queries = self.queries() - q0
        created = {n: self.rollouts.events[n][0].at for n in names}
        first = min(created.values())
        row.all_done_s = finished - first
        for name in names:
            h = history(self.rollouts.latest(name))
            succeeded = scenario.finished_at(h)
            if succeeded is None or [w for _, w in scenario.confirmed_weights(h)] != [*WEIGHTS]:
                raise SystemExit(f"{name}: unexpected history {h}")
            row.per_rollout.append(succeeded - created[name])
            weights = scenario.confirmed_weights(h)
            row.starts.append(weights[0][0] - created[name])
            row.reactions.append(scenario.parse_time(h[0]["time"]) - created[name])
            row.finishes.append(succeeded - weights[-1][0])
            row.overheads += [o for _, o in scenario.step_overheads(h, self.hold_s)]
        row.requests = scenario.requests_between(before, after)
        if self.args.gates:
            minutes = row.all_done_s / 60
            row.queries_per_rollout_minute = queries / (self.n * minutes)
        # What they cost once Succeeded.
        r0, q0 = self.requests(names), self.queries()
        time.sleep(IDLE_S)
        row.idle_requests = sum(scenario.requests_between(r0, self.requests(names)).values())
        row.idle_queries = self.queries() - q0
        row.rss_mib = self.peak_rss_mib()

    def peak_rss_mib(self) -> float:
        """The largest operator process's peak RSS so far."""
        peaks = [
            scenario.peak_rss_mib(op.proc.pid) for op in self.operators if op.proc.poll() is None
        ]
        return max(peaks, default=0.0)

    def run_abort(self) -> None:
        names = self.names("a")
        row = self.row
        steps: list[dict[str, Any]] = [{"setWeight": 25}, {"approval": {}}, {"setWeight": 100}]
        self.create("Rollouts to abort", [self.rollout_doc(n, steps) for n in names])
        self.wait_all(
            "waiting for approval",
            names,
            self.rollouts,
            lambda r: phase(r) == "AwaitingApproval",
            timeout=300 + self.n,
        )
        self.wait_all(
            "routes at 25%",
            names,
            self.routes,
            lambda r: scenario.new_weight(r) == 25,
            timeout=60,
        )
        # Quiet for longer than one Event post takes on a loaded server (up to ~2.5 s at
        # N = 1,000), so the arrival's Events still being posted are not counted as waiting.
        r0 = scenario.settled(partial(self.requests, names), quiet_s=5.0, timeout=self.drain_s)
        q0 = self.queries()
        time.sleep(IDLE_S)
        row.waiting_requests = scenario.requests_between(r0, self.requests(names))
        row.waiting_queries = self.queries() - q0
        before = self.requests(names)
        sent = time.time()
        bar = Progress(f"N={self.n} annotating {ABORT}", len(names))
        count = 0

        def annotate(name: str) -> float:
            started = time.monotonic()
            self.objects.patch_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, name, {"metadata": {"annotations": {ABORT: "x"}}}
            )
            return time.monotonic() - started

        with ThreadPoolExecutor(self.args.threads) as pool:
            for took in pool.map(annotate, names):
                row.annotation_writes.append(took)
                count += 1
                bar.update(count)
        row.annotation_span_s = time.time() - sent
        bar.close()
        zero = self.wait_all(
            "routes at 0%",
            names,
            self.routes,
            lambda r: scenario.new_weight(r) == 0,
            timeout=120,
            after=sent,
        )
        asked = {
            n: s.at
            for n in names
            if (s := self.rollouts.first(n, lambda r: ABORT in annotations_of(r), sent))
        }
        row.aborts = [zero[n] - asked[n] for n in names if n in asked]
        after = scenario.settled(partial(self.requests, names), quiet_s=2.0, timeout=30)
        row.abort_requests = scenario.requests_between(before, after)

    # -- tear-down -----------------------------------------------------------------------

    def finish(self) -> None:
        """Peak RSS, then the operators stopped and everything removed."""
        self.row.rss_all_mib = max(self.row.rss_mib, self.peak_rss_mib())
        for op in self.operators:
            op.stop()
        for w in ("rollouts", "deployments", "routes"):
            if hasattr(self, w):
                getattr(self, w).stop()
        # Without the operator nothing releases the finalizers: drop them, then the namespace.
        listed: Any = self.objects.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)
        names = [r["metadata"]["name"] for r in listed.get("items", [])]

        def release(name: str) -> None:
            self.objects.patch_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, name, {"metadata": {"finalizers": None}}
            )

        with ThreadPoolExecutor(self.args.threads) as pool:
            list(pool.map(release, names))
        self.env.kubectl("delete", "namespace", self.ns, "--wait=false", check=False)
        if getattr(self, "policy", None):
            self.env.kubectl(
                "delete", "--ignore-not-found", "-f", "-",
                input=yaml.safe_dump_all(self.policy), check=False,
            )  # fmt: skip


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def bench(env: scenario.Env, args: argparse.Namespace, n: int, shards: int) -> Row:
    run = Run(env, args, n, shards)
    if shards and not operator_supports("--shard"):
        run.row.skipped = "the operator has no --shard flag"
        return run.row
    try:
        run.prepare()
        if args.floor and run.replicas:
            run.row.floor_s = run.floor()
            print(f"N={n} floor: all done {run.row.floor_s:.1f}s", flush=True)
        elif args.floor:
            run.row.floor_s, run.row.floor_per_route, run.row.floor_writes = run.route_floor()
            print(f"N={n} floor: all done {run.row.floor_s:.1f}s", flush=True)
        run.start_operators()
        run.run_plan()
        if args.abort and not run.replicas:
            run.run_abort()
    finally:
        run.finish()
    return run.row


def report(rows: list[Row], args: argparse.Namespace) -> None:
    hold_s = float(args.hold.removesuffix("s"))
    holds = 3 * hold_s
    print()
    print(f"plan {'/'.join(map(str, WEIGHTS))} with three {args.hold} holds; router {args.router}; "
          f"{args.gates} gate(s) per Rollout (interval {args.interval})")  # fmt: skip
    for r in rows:
        print(f"\nN = {r.n}, {r.label}")
        if r.skipped:
            print(f"  skipped: {r.skipped}")
            continue
        worst = max(r.per_rollout)
        if r.floor_s is not None and not r.floor_per_route:
            limit = FLOOR_FACTOR * r.floor_s
            verdict = "meets" if r.all_done_s <= limit else "MISSES"
            print(f"  all done {r.all_done_s:.1f}s; floor (no operator) {r.floor_s:.1f}s; "
                  f"ratio {r.all_done_s / r.floor_s:.2f} (target <= {FLOOR_FACTOR}): "
                  f"{verdict}")  # fmt: skip
        else:
            verdict = "meets" if worst <= holds + MARGIN_S else "MISSES"
            print(f"  all done {r.all_done_s:.1f}s after the first was created; per Rollout "
                  f"creation -> Succeeded {spread(r.per_rollout)} max {worst:.2f}s "
                  f"(target <= {holds + MARGIN_S:g}s): {verdict}")  # fmt: skip
        if r.floor_s is not None and r.floor_per_route:
            print(f"  floor (the plan's route writes, no operator): all done {r.floor_s:.1f}s; "
                  f"per route {spread(r.floor_per_route)} max {max(r.floor_per_route):.2f}s; "
                  f"Segue / floor, all done: {r.all_done_s / r.floor_s:.2f}")  # fmt: skip
            print(f"  floor, each route write (sent -> answered, a step's least overhead) "
                  f"{spread(r.floor_writes)} max {max(r.floor_writes):.3f}s")  # fmt: skip
        print(f"  step overhead (hold end -> next weight confirmed) {spread(r.overheads)}"
              f" max {max(r.overheads):.3f}s")  # fmt: skip
        print(f"  creation -> first weight confirmed {spread(r.starts)} (-> first decision "
              f"{spread(r.reactions)}); last weight -> Succeeded {spread(r.finishes)}")  # fmt: skip
        cpu_note = f" (target at N=100 <= {TARGET_CPU_100_S:g}s)" if r.n == 100 else ""
        verdict = "meets" if r.rss_mib <= TARGET_RSS_MIB else "MISSES"
        both = f"; {r.rss_all_mib:.0f} MiB once N more came (2N held)" if r.aborts else ""
        print(f"  operator CPU {r.cpu_s:.1f}s{cpu_note}; peak RSS {r.rss_mib:.0f} MiB "
              f"with the N Rollouts (target <= {TARGET_RSS_MIB:g}): {verdict}{both}")  # fmt: skip
        per = sum(r.requests.values()) / r.n
        verdict = "meets" if per <= TARGET_REQUESTS else "MISSES"
        print(f"  API requests per Rollout {per:.1f} (target <= {TARGET_REQUESTS:g}): {verdict}  "
              f"[{scenario.by_method({k: v / r.n for k, v in r.requests.items()})}]")  # fmt: skip
        print(f"  Succeeded, over {IDLE_S:g}s: {r.idle_requests:.0f} requests, "
              f"{r.idle_queries:.0f} queries (target 0)")  # fmt: skip
        if r.queries_per_rollout_minute is not None:
            print(f"  Prometheus queries per Rollout-minute {r.queries_per_rollout_minute:.1f}")
        if r.waiting_requests is not None:
            print(f"  {r.n} waiting at an approval step, over {IDLE_S:g}s: "
                  f"{sum(r.waiting_requests.values()):.0f} requests "
                  f"[{scenario.by_method(r.waiting_requests)}], "
                  f"{r.waiting_queries:.0f} queries")  # fmt: skip
        if r.aborts:
            verdict = "meets" if percentile(r.aborts, 99) <= TARGET_P99_S else "MISSES"
            print(f"  abort (annotation seen -> route at 0) {spread(r.aborts)} "
                  f"max {max(r.aborts):.3f}s (target p99 <= {TARGET_P99_S:g}s): {verdict}; "
                  f"{sum(r.abort_requests.values()) / r.n:.1f} requests per abort")  # fmt: skip
            print(f"  the benchmark's abort annotations ({args.threads} threads), each "
                  f"sent -> answered {spread(r.annotation_writes)} "
                  f"max {max(r.annotation_writes):.3f}s; all {len(r.annotation_writes)} "
                  f"within {r.annotation_span_s:.1f}s")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", default="100,1000", help="N, comma-separated (each a run)")
    parser.add_argument("--router", default="gatewayAPI", choices=ROUTERS)
    parser.add_argument("--hold", default="5s", help="the pause after each weight")
    parser.add_argument("--gates", type=int, default=0, choices=(0, 1, 2), help="per Rollout")
    parser.add_argument("--interval", default="10s", help="analysis interval, with --gates")
    parser.add_argument("--abort", action="store_true", help="measure abort latency too")
    parser.add_argument("--floor", action="store_true", help="measure the floor first")
    parser.add_argument("--shards", type=int, default=0, help="operator processes (--shard)")
    parser.add_argument("--threads", type=int, default=16, help="client threads for bulk writes")
    args = parser.parse_args()
    try:
        counts = [int(x) for x in args.rollouts.split(",") if x]
    except ValueError:
        parser.error(f"--rollouts: comma-separated numbers, not {args.rollouts!r}")
    if not counts or not all(1 <= n <= 5000 for n in counts):
        parser.error("--rollouts: each N between 1 and 5000")
    if not 0 <= args.shards <= 16:
        parser.error("--shards: 0 (one operator, no sharding) to 16")
    env = scenario.start_cluster()
    sim = None
    if args.gates:
        sim = scenario.launch_sim(env.kubeconfig, SHARED, "--static-weight", "25", rate=50)
        sim.job = f"trafficsim-bench-scale-{secrets.token_hex(3)}"
        cluster.add_scrape_target(sim.job, sim.host_port)
        scenario.wait_for(
            "Prometheus to scrape the simulator",
            lambda: env.query(f'up{{job="{sim.job}"}}'),
            lambda v: v == 1.0,
            60,
        )
    rows = []
    try:
        for n in counts:
            rows.append(bench(env, args, n, args.shards))
            report(rows[-1:], args)  # each row as soon as it is measured
    finally:
        if sim is not None:
            sim.stop()
    if len(rows) > 1:
        report(rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
