"""``python -m segue_testkit.cluster``: a real, small Kubernetes control plane and Prometheus
on loopback, built from source.

There is no Docker engine here, so kind cannot run. Instead this builds etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kubectl as one multi-call binary from Go modules
(segue_testkit/cluster/localkube), installs KWOK (fake nodes and pods) and helm, caches all of
it outside the checkout keyed by version, and starts the components on 127.0.0.1.

    python -m segue_testkit.cluster build     # build (or reuse) the binaries
    python -m segue_testkit.cluster up        # start etcd, apiserver, controllers, KWOK, Prometheus
    python -m segue_testkit.cluster env       # print `export KUBECONFIG=...` lines for a shell
    python -m segue_testkit.cluster status
    python -m segue_testkit.cluster crds      # install Segue's and the routers' CRDs
    python -m segue_testkit.cluster apiserver stop|start   # an API server outage
    python -m segue_testkit.cluster down      # stop exactly what `up` started, remove its data

Environment: SEGUE_CACHE_DIR (default ~/.cache/segue) for binaries; SEGUE_CLUSTER_DIR
(default /tmp/segue-cluster) for state, kubeconfig and logs; SEGUE_CLUSTER=kind to use kind
where a Docker daemon runs; SEGUE_APISERVER_PROFILING=1 to have the API server serve
/debug/pprof (for benchmarks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segue_testkit.cluster.binaries import build
from segue_testkit.cluster.control_plane import apiserver, down, status, up
from segue_testkit.cluster.crds import crd_sources, install_crds, source_files
from segue_testkit.cluster.state import load_state
from segue_testkit.cluster.usage import NOT_RUNNING, env_lines


def install_into_running() -> None:
    info = load_state().get("info", {})
    if not info:
        raise SystemExit(NOT_RUNNING)
    for name in install_crds(Path(info["bin_dir"]), info["kubeconfig"]):
        print(f"established {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m segue_testkit.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build or reuse the cached binaries")
    p_up = sub.add_parser("up", help="start the control plane, KWOK nodes and Prometheus")
    p_up.add_argument("--no-prometheus", action="store_true")
    sub.add_parser("down", help="stop what `up` started and remove its data")
    p_api = sub.add_parser("apiserver", help="stop or start only the kube-apiserver")
    p_api.add_argument("action", choices=("stop", "start"))
    sub.add_parser("status", help="show the components and their pids")
    sub.add_parser(
        "env", help='print export lines for a shell: eval "$(python -m segue_testkit.cluster env)"'
    )
    sub.add_parser("crds", help="install Segue's CRDs and those of crd_sources() into the cluster")
    sub.add_parser("gateway-crds", help="print the paths of the Gateway API CRDs")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        build()
    elif args.cmd == "up":
        up(with_prometheus=not args.no_prometheus)
    elif args.cmd == "down":
        down()
    elif args.cmd == "apiserver":
        apiserver(args.action)
    elif args.cmd == "status":
        return status()
    elif args.cmd == "env":
        print("\n".join(env_lines()))
    elif args.cmd == "crds":
        install_into_running()
    elif args.cmd == "gateway-crds":
        gateway = [s for s in crd_sources() if s.module == "sigs.k8s.io/gateway-api"]
        print("\n".join(str(p) for s in gateway for p in source_files(s)))
    return 0
