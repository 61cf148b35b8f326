"""Building blocks of the demo and the rollback benchmark: a namespace with a legacy and a
new Deployment behind an HTTPRoute, the traffic simulator following that route and scraped
by Prometheus, and the operator process. Everything is real; nothing here is a stand-in."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families

import cluster
from segue import MANAGED_LABEL, MANAGED_VALUE

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_for(what: str, get: Callable[[], T], ok: Callable[[T], bool], timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = get()
        if ok(last):
            return last
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile, linearly interpolated between the closest ranks."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def spread(values: Sequence[float]) -> str:
    """p50, p99, min and max of a sample, in seconds, and its size."""
    if not values:
        return "no samples"
    return (
        f"p50 {percentile(values, 50):.3f}s  p99 {percentile(values, 99):.3f}s  "
        f"min {min(values):.3f}s  max {max(values):.3f}s  (n={len(values)})"
    )


def parse_time(value: str) -> float:
    """An RFC 3339 time as Kubernetes and Segue's status write it, as a Unix time."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Env:
    info: dict[str, Any]

    @property
    def kubeconfig(self) -> str:
        return str(self.info["kubeconfig"])

    @property
    def prometheus(self) -> str:
        return str(self.info["prometheus"])

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        bins = Path(self.info["bin_dir"])
        result = subprocess.run(
            [str(bins / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    @cached_property
    def api(self) -> client.ApiClient:
        """A Kubernetes client for this cluster (for what kubectl would be too slow for)."""
        api: client.ApiClient = config.new_client_from_config(config_file=self.kubeconfig)  # type: ignore[no-untyped-call]
        return api

    def apply(self, namespace: str, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))

    def get_json(self, namespace: str, *what: str) -> dict[str, Any]:
        out = self.kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
        return dict(json.loads(out)) if out.strip() else {}

    def query(self, promql: str) -> float | None:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
        except OSError:
            return None
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if value != value else value  # NaN: no data


def start_cluster() -> Env:
    """The local cluster and Prometheus (built on first use), the CRDs installed."""
    info = cluster.up()
    env = Env(info)
    segue_crds = [
        ROOT / "crds" / f"{n}.segue.dev.yaml" for n in ("rollouts", "metricproviders", "migrations")
    ]
    for path in [*segue_crds, *cluster.gateway_api_crds()]:
        env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    env.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/rollouts.segue.dev", "crd/metricproviders.segue.dev", "crd/migrations.segue.dev",
        "crd/httproutes.gateway.networking.k8s.io",
    )  # fmt: skip
    return env


def ensure_namespace(env: Env, namespace: str) -> None:
    env.kubectl("create", "namespace", namespace, check=False)
    wait_for(
        f"namespace {namespace}'s default ServiceAccount",
        lambda: env.kubectl("get", "-n", namespace, "serviceaccount", "default", check=False),
        bool,
        60,
    )


def delete_namespace(env: Env, namespace: str) -> None:
    """Delete a benchmark's namespace. Its Rollouts go first, while the operator still runs
    to release their finalizers; any finalizer left after that is removed, so the namespace
    never hangs in Terminating."""
    env.kubectl(
        "delete", "-n", namespace, "rollouts.segue.dev", "--all", "--timeout=90s", check=False
    )
    left = env.kubectl("get", "-n", namespace, "rollouts.segue.dev", "-o", "name", check=False)
    for name in left.split():
        env.kubectl(
            "patch", "-n", namespace, name, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
    env.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def deployment(
    name: str, app: str, replicas: int = 2, version: str | None = None
) -> dict[str, Any]:
    """A Deployment whose pods carry app=<app> and version=<version, default: name>."""
    labels = {"app": app, "version": version or name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        # Opted in to Segue's writes (the chart's default requireManagedLabel=true needs it).
        "metadata": {"name": name, "labels": {**labels, MANAGED_LABEL: MANAGED_VALUE}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": f"example.com/{app}:{name}"}]},
            },
        },
    }


def service(name: str, app: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app, "version": version}, "ports": [{"port": 80}]},
    }


def httproute(name: str, legacy: str, new: str, legacy_weight: int = 100) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "labels": {MANAGED_LABEL: MANAGED_VALUE}},
        "spec": {
            "parentRefs": [{"name": "public"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": legacy, "port": 80, "weight": legacy_weight},
                        {"name": new, "port": 80, "weight": 100 - legacy_weight},
                    ]
                }
            ],
        },
    }


def service_pair(env: Env, namespace: str, app: str) -> None:
    """<app>-v1 (legacy) and <app>-v2 (new): Deployments, Services and one HTTPRoute."""
    env.apply(
        namespace,
        deployment(f"{app}-v1", app, version="v1"),
        deployment(f"{app}-v2", app, version="v2"),
        service(f"{app}-v1", app, "v1"),
        service(f"{app}-v2", app, "v2"),
        httproute(app, f"{app}-v1", f"{app}-v2"),
    )
    for version in ("v1", "v2"):
        env.kubectl(
            "rollout", "status", "-n", namespace, f"deployment/{app}-{version}", "--timeout=120s"
        )


def replicas_pair(env: Env, namespace: str, app: str, legacy_pods: int = 4) -> None:
    """<app>-v1 (legacy, ``legacy_pods`` ready pods) and <app>-v2 (new, none yet) for the
    replicas router: one Service selecting both, the split made by ready pods. Segue's
    annotations from an earlier Rollout of the pair are removed."""
    env.apply(
        namespace,
        deployment(f"{app}-v1", app, legacy_pods, version="v1"),
        deployment(f"{app}-v2", app, 0, version="v2"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": app},
            "spec": {"selector": {"app": app}, "ports": [{"port": 80}]},
        },
    )
    env.kubectl(
        "annotate", "-n", namespace, f"deployment/{app}-v1", f"deployment/{app}-v2",
        "segue.dev/baseline-replicas-", "segue.dev/weight-",
    )  # fmt: skip
    for version in ("v1", "v2"):
        env.kubectl(
            "rollout", "status", "-n", namespace, f"deployment/{app}-{version}", "--timeout=120s"
        )


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
    """Signal, wait up to 15 s, then kill; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class Sim:
    """hack/trafficsim.py, running; its /config changes behaviour at run time."""

    proc: subprocess.Popen[str]
    host_port: str
    app: str
    job: str = ""  # the Prometheus scrape job, removed on stop

    def config(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.host_port}/config", timeout=5) as r:
            body: dict[str, Any] = json.load(r)
        return body

    def put(self, patch: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://{self.host_port}/config", data=json.dumps(patch).encode(), method="PUT"
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            body: dict[str, Any] = json.load(r)
        return body

    def set(self, version: str, **behaviour: float) -> None:
        self.put({version: behaviour})

    def weight(self) -> float | None:
        w = self.config()["weight"]
        return None if w is None else float(w)

    def stop(self) -> int:
        code = stop_process(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.job:
            cluster.remove_scrape_target(self.job)
        return code


def launch_sim(
    kubeconfig: str, app: str, *source: str, rate: float = 200.0, log: Path | None = None
) -> Sim:
    """The simulator for <app> (versions v1 and v2, 50 ms each) with a weight source
    (--httproute ..., --deployments ..., --static-weight ...); returns once it listens."""
    log = log or Path(tempfile.mkdtemp(prefix="segue-sim-")) / f"trafficsim-{app}.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [
                sys.executable, str(ROOT / "hack" / "trafficsim.py"), "--port", "0",
                "--app", app, "--legacy-version", "v1", "--new-version", "v2",
                "--rate", str(rate), "--legacy-latency-ms", "50", "--new-latency-ms", "50",
                "--kubeconfig", kubeconfig, *source,
            ],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("listening on "):
        stop_process(proc, signal.SIGKILL)
        detail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the traffic simulator for {app} did not start: {line!r}\n{detail}")
    return Sim(proc, line.removeprefix("listening on "), app)


def start_sim(
    env: Env, namespace: str, app: str, logs: Path, *, ready_replicas: bool = False
) -> Sim:
    """The simulator for <app>, following its HTTPRoute (with ``ready_replicas``: the ready
    pods of <app>-v1 and <app>-v2), scraped by Prometheus every second."""
    if ready_replicas:
        source = ["--deployments", f"{namespace}/{app}-v1,{namespace}/{app}-v2"]
    else:
        source = ["--httproute", f"{namespace}/{app}",
                  "--legacy-backend", f"{app}-v1", "--new-backend", f"{app}-v2"]  # fmt: skip
    sim = launch_sim(env.kubeconfig, app, *source, log=logs / f"trafficsim-{app}.log")
    sim.job = f"trafficsim-{namespace}-{app}"
    cluster.add_scrape_target(sim.job, sim.host_port)
    wait_for(
        f"Prometheus to scrape the simulator of {app}",
        lambda: env.query(f'up{{job="{sim.job}"}}'),
        lambda v: v == 1.0,
        60,
    )
    return sim


@dataclass
class Operator:
    """`python -m segue`, running."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check(self) -> None:
        """Raise if the operator has exited (a benchmark would otherwise wait for nothing)."""
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"the operator exited ({self.proc.returncode}); the end of {self.log_path}:\n"
                f"{self.log()[-3000:]}"
            )

    def requests(self) -> dict[str, float]:
        """Kubernetes API requests made so far, by method (segue_kube_requests_total). Events
        are posted by kopf's own client and the Lease by the leader elector: neither counts."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "segue_kube_requests_total":
                    out[s.labels["method"]] = s.value
        return out

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)


def start_operator(
    kubeconfig: str,
    log: Path,
    namespaces: Sequence[str] = (),
    prometheus: str | None = None,
    metrics_port: int | None = None,
    verbose: bool = False,
    extra_args: Sequence[str] = (),
) -> Operator:
    """The operator against ``kubeconfig``, watching ``namespaces`` (none: all of them);
    returns once its liveness endpoint answers (a standby answers it too).

    Leader election is on, as in production: the Lease is in the first of ``namespaces``
    (``default`` without any) unless ``extra_args`` say otherwise."""
    port = free_port()
    metrics_port = metrics_port or free_port()
    argv = [sys.executable, "-m", "segue", "--liveness", f"http://127.0.0.1:{port}/healthz"]
    argv += ["--metrics-port", str(metrics_port)]
    for namespace in namespaces:
        argv += ["--namespace", namespace]
    if prometheus:
        argv += ["--prometheus-address", prometheus]
    if verbose:
        argv.append("--verbose")
    argv += extra_args
    # Only the given kubeconfig: never in-cluster credentials from the environment, nor the
    # Lease namespace of a pod these tests might run in.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KUBERNETES_") and k != "POD_NAMESPACE"
    }
    env["KUBECONFIG"] = kubeconfig
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    operator = Operator(proc, log, metrics_port)

    def alive() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the operator exited ({proc.returncode}):\n{operator.log()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    wait_for("the operator's liveness endpoint", alive, bool, 60)
    return operator


def rollout(app: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    """A Rollout of <app>-v1 to <app>-v2 on the Gateway API router."""
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name or app},
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
            **spec,
        },
    }


def route_weight(env: Env, namespace: str, route: str) -> int | None:
    return new_weight(env.get_json(namespace, "httproute", route))


def requests_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Requests per method from one ``Operator.requests()`` reading to a later one."""
    return {m: after[m] - before.get(m, 0) for m in after if after[m] - before.get(m, 0)}


EVENT_POSTS = "Event POST (kopf)"


def rollout_events(
    env: Env, namespace: str, names: Sequence[str] | None = None
) -> dict[str, float]:
    """Events posted about Rollouts in ``namespace`` (only ``names``, if given), by reason.
    kopf posts each one with a request of its own, outside segue_kube_requests_total."""
    events: Any = client.CoreV1Api(env.api).list_namespaced_event(namespace)
    out: dict[str, float] = {}
    for e in events.items:
        ref = e.involved_object
        if ref.kind == "Rollout" and (names is None or ref.name in names):
            out[e.reason] = out.get(e.reason, 0) + (e.count or 1)
    return out


def with_events(
    env: Env, namespace: str, counted: dict[str, float], names: Sequence[str]
) -> dict[str, float]:
    """``counted`` (``Operator.requests()``) and, as method ``EVENT_POSTS``, the Events
    posted so far about the Rollouts ``names``."""
    events = sum(rollout_events(env, namespace, names).values())
    return {**counted, EVENT_POSTS: events} if events else dict(counted)


def settled(
    read: Callable[[], dict[str, float]], quiet_s: float = 1.0, timeout: float = 15.0
) -> dict[str, float]:
    """A reading of request counts once they have not changed for ``quiet_s`` (Events are
    posted a little after the writes they describe), or the last one after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = read()
        if now == last:
            return now
        last = now
    return last


def by_method(spent: dict[str, float]) -> str:
    return "  ".join(f"{m} {v:.0f}" for m, v in sorted(spent.items())) or "none"


@contextlib.contextmanager
def hanging_server() -> Iterator[tuple[str, Callable[[], int]]]:
    """A loopback TCP server that accepts connections and never answers: a Prometheus that
    hangs. Yields its address and a function counting the connections accepted so far."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True, name="hanging-server")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", lambda: len(held)
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


@dataclass
class Seen:
    """One watch event as a benchmark saw it: when it arrived (Unix time) and the object."""

    at: float
    type: str
    obj: dict[str, Any]


@dataclass
class ObjectWatch:
    """A watch stream of one kind in one namespace on a thread of its own, remembering when
    each event arrived, so a benchmark can ask when an object first looked some way without
    polling the API server. The thread ends by itself after ``max_s`` seconds, and within
    ``chunk_s`` of ``stop()``.

    ``list_fn`` and ``args`` are a namespaced list call of the Kubernetes client, e.g.
    ``client.AppsV1Api(api).list_namespaced_deployment, namespace``."""

    list_fn: Callable[..., Any]
    args: tuple[Any, ...]
    guard: Callable[[], None] | None = None  # called while waiting; raises to give up
    max_s: float = 900.0
    chunk_s: int = 5
    events: dict[str, list[Seen]] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ObjectWatch:
        self._thread = threading.Thread(target=self._run, daemon=True, name="object-watch")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.chunk_s + 5)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        version: str | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            kwargs: dict[str, Any] = {
                "timeout_seconds": self.chunk_s,
                "_request_timeout": (5, self.chunk_s + 10),
            }
            if version:
                kwargs["resource_version"] = version
            try:
                stream: Callable[..., Iterator[dict[str, Any]]] = watch.Watch().stream  # type: ignore[no-untyped-call]
                for event in stream(self.list_fn, *self.args, **kwargs):
                    at = time.time()
                    obj: dict[str, Any] = event["raw_object"]
                    if event["type"] == "ERROR":  # e.g. 410 Gone: start over from a listing
                        version = None
                        break
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion") or version
                    with self._cond:
                        self.events.setdefault(str(meta.get("name")), []).append(
                            Seen(at, str(event["type"]), obj)
                        )
                        self._cond.notify_all()
            except Exception:  # a dropped stream: resume from the last version seen
                time.sleep(0.2)

    def first(
        self, name: str, ok: Callable[[dict[str, Any]], bool], after: float = 0.0
    ) -> Seen | None:
        """The first event at or after ``after`` (Unix time) in which ``name`` was ``ok``."""
        with self._cond:
            for seen in self.events.get(name, []):
                if seen.at >= after and seen.type != "DELETED" and ok(seen.obj):
                    return seen
        return None

    def latest(self, name: str) -> dict[str, Any] | None:
        with self._cond:
            seen = self.events.get(name)
            return seen[-1].obj if seen and seen[-1].type != "DELETED" else None

    def wait(
        self,
        what: str,
        name: str,
        ok: Callable[[dict[str, Any]], bool],
        after: float = 0.0,
        timeout: float = 60.0,
    ) -> Seen:
        """Block until ``first(name, ok, after)`` exists; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.first(name, ok, after)  # the lock is re-entrant
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
                if self.guard is not None:
                    self.guard()
                self._cond.wait(min(left, 1.0))


def new_weight(route: dict[str, Any], rule: int = 0) -> int | None:
    """The weight of an HTTPRoute's second backendRef (the new version), as Segue writes it."""
    try:
        return int(route["spec"]["rules"][rule]["backendRefs"][1].get("weight", 1))
    except (KeyError, IndexError, TypeError):
        return None
