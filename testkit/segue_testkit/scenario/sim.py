"""The traffic simulator (``python -m segue_testkit.trafficsim``) as a child process, and
its run-time controls."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segue_testkit import cluster
from segue_testkit.scenario.env import Env
from segue_testkit.scenario.processes import stop_process
from segue_testkit.scenario.waiting import wait_for


@dataclass
class Sim:
    """The traffic simulator, running; its /config changes behaviour at run time."""

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

    def requests(self) -> dict[tuple[str, str], float]:
        """Requests counted so far, by (customer, version label), from the simulator's own
        /metrics (customer is "" without --customers)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://{self.host_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "http_requests":
                continue
            for sample in family.samples:
                if sample.name != "http_requests_total":
                    continue
                key = (sample.labels.get("customer", ""), sample.labels["version"])
                out[key] = out.get(key, 0.0) + sample.value
        return out

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
                sys.executable, "-m", "segue_testkit.trafficsim", "--port", "0",
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
