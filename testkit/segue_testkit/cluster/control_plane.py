"""Bringing the local control plane up and down: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, KWOK with its fake nodes, and Prometheus, all on
127.0.0.1; and stopping or starting only the kube-apiserver, for outage tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from segue_testkit.cluster.binaries import build
from segue_testkit.cluster.external import up_kind
from segue_testkit.cluster.nodes import fake_nodes_manifest, kubectl
from segue_testkit.cluster.pki import make_pki, write_kubeconfig
from segue_testkit.cluster.probes import http_ok, https_ok, wait_for
from segue_testkit.cluster.processes import Proc, alive, free_port, spawn, stop_proc
from segue_testkit.cluster.prometheus import start_prometheus
from segue_testkit.cluster.settings import (
    NODE_COUNT,
    POD_CIDR,
    SERVICE_CIDR,
    apiserver_profiling,
    fmt_secs,
    log,
    state_dir,
)
from segue_testkit.cluster.state import (
    load_state,
    running_procs,
    save_state,
    start,
    state_file,
)
from segue_testkit.cluster.usage import print_usage


def up(with_prometheus: bool = True) -> dict[str, Any]:
    if os.environ.get("SEGUE_CLUSTER") == "kind":
        return up_kind(with_prometheus)
    procs = running_procs()
    if procs and all(alive(p) for p in procs):
        running: dict[str, Any] = load_state().get("info", {})
        log(f"already running (kubeconfig {running.get('kubeconfig')}); `down` stops it")
        return dict(running)
    if procs:
        log("found a partly running cluster; stopping it first")
        down()

    started = time.monotonic()
    bins = build()
    root = state_dir()
    data, logs, pki = root / "data", root / "logs", root / "pki"
    if logs.exists():
        shutil.rmtree(logs)
    make_pki(pki)
    procs = []
    save_state(procs, extra={})

    etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
    cm_port, sched_port = free_port(), free_port()
    log("starting etcd")
    start(
        "etcd",
        [
            str(bins / "etcd"),
            "--name=segue",
            f"--data-dir={data / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=segue=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # a throwaway test cluster: speed over durability
            "--log-level=warn",
        ],
        logs,
        procs,
    )
    wait_for("etcd", lambda: http_ok(f"http://127.0.0.1:{etcd_port}/health"), 30, logs)

    server = f"https://127.0.0.1:{api_port}"
    log("starting kube-apiserver")
    start(
        "kube-apiserver",
        [
            str(bins / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--endpoint-reconciler-type=none",  # loopback cannot be a Service endpoint
            "--allow-privileged=true",
            f"--profiling={str(apiserver_profiling()).lower()}",
            f"--cert-dir={pki}",
        ],
        logs,
        procs,
    )
    wait_for("kube-apiserver", lambda: https_ok(f"{server}/readyz", pki), 90, logs)

    kubeconfig = root / "kubeconfig"
    write_kubeconfig(kubeconfig, server, pki, "admin")
    for user in ("controller-manager", "scheduler"):
        write_kubeconfig(root / f"{user}.kubeconfig", server, pki, user)

    log("starting kube-controller-manager, kube-scheduler and kwok")
    start(
        "kube-controller-manager",
        [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={root / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={root / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={root / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={cm_port}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--cluster-cidr={POD_CIDR}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service,-route",
        ],
        logs,
        procs,
    )
    start(
        "kube-scheduler",
        [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={root / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={root / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={root / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={sched_port}",
            "--leader-elect=false",
        ],
        logs,
        procs,
    )
    start(
        "kwok",
        [
            str(bins / "kwok"),
            f"--kubeconfig={kubeconfig}",
            f"--config={bins.parent / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.244.0.1/16",
            "--node-ip=10.1.0.1",
            "--node-lease-duration-seconds=40",
        ],
        logs,
        procs,
    )

    kubectl(bins, kubeconfig, "apply", "-f", "-", input=fake_nodes_manifest(NODE_COUNT))
    wait_for(
        f"{NODE_COUNT} Ready KWOK nodes",
        lambda: (
            kubectl(
                bins,
                kubeconfig,
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
            ).split()
            == ["True"] * NODE_COUNT
        ),
        60,
        logs,
    )
    # Pods need the default ServiceAccount, which the controller-manager creates.
    wait_for(
        "the default ServiceAccount",
        lambda: bool(kubectl(bins, kubeconfig, "get", "serviceaccount", "default", "-o", "name")),
        60,
        logs,
    )

    info: dict[str, Any] = {
        "kubeconfig": str(kubeconfig),
        "server": server,
        "bin_dir": str(bins),
        "logs": str(logs),
        "kind": False,
    }
    if with_prometheus:
        info.update(start_prometheus(root, logs, procs))
    save_state(procs, extra=info)
    log(f"cluster up in {fmt_secs(time.monotonic() - started)}")
    print_usage(info)
    return info


def down() -> None:
    state = load_state()
    procs = [Proc(**p) for p in state.get("procs", [])]
    # Stop in reverse start order: clients before the API server, etcd last.
    for p in reversed(procs):
        if alive(p):
            log(f"stopping {p.name} (pid {p.pid})")
        stop_proc(p)
    if state.get("info", {}).get("kind"):
        subprocess.run(["kind", "delete", "cluster", "--name", "segue"], check=False)
    root = state_dir()
    for sub in ("data", "pki", "prometheus"):
        shutil.rmtree(root / sub, ignore_errors=True)
    for f in root.glob("*kubeconfig"):
        f.unlink()
    state_file().unlink(missing_ok=True)
    log(f"stopped; logs kept in {root / 'logs'}")


def apiserver(action: str) -> None:
    """Stop the running cluster's kube-apiserver, or start it again with the arguments `up`
    gave it; every other component keeps running. `start` returns once /readyz answers."""
    state = load_state()
    procs = [Proc(**p) for p in state.get("procs", [])]
    found = [i for i, p in enumerate(procs) if p.name == "kube-apiserver"]
    if not found:
        raise SystemExit(f"no kube-apiserver was started in {state_dir()}")
    index, old = found[0], procs[found[0]]
    if action == "stop":
        log(f"stopping kube-apiserver (pid {old.pid})")
        stop_proc(old)
        return
    if alive(old):
        log(f"kube-apiserver is already running (pid {old.pid})")
        return
    if not old.argv:
        raise SystemExit("this cluster's state has no kube-apiserver arguments; `down`, then `up`")
    logs = Path(state["info"]["logs"])
    procs[index] = spawn(old.name, old.argv, logs, mode="ab")
    save_state(procs, extra=None)
    log(f"started kube-apiserver (pid {procs[index].pid})")
    server = state["info"]["server"]
    wait_for("kube-apiserver", lambda: https_ok(f"{server}/readyz", state_dir() / "pki"), 90, logs)


def status() -> int:
    state = load_state()
    procs = [Proc(**p) for p in state.get("procs", [])]
    if not procs:
        print("not running")
        return 1
    for p in procs:
        print(f"{p.name:<24} pid {p.pid:<8} {'running' if alive(p) else 'STOPPED'}")
    for k, v in state.get("info", {}).items():
        print(f"{k:<24} {v}")
    return 0 if all(alive(p) for p in procs) else 1
