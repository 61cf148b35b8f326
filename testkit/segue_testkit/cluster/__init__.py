"""The local cluster: a real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) built from Go modules, KWOK nodes, Prometheus, and the CRDs tests need.

``python -m segue_testkit.cluster up|down|status|env|crds|apiserver|build``; from Python,
the names below.
"""

from segue_testkit.cluster.binaries import build
from segue_testkit.cluster.control_plane import apiserver, down, status, up
from segue_testkit.cluster.crds import CRDSource, crd_files, crd_sources, install_crds
from segue_testkit.cluster.external import up_external, up_kind
from segue_testkit.cluster.probes import https_ok
from segue_testkit.cluster.processes import Proc, alive
from segue_testkit.cluster.prometheus import (
    add_scrape_target,
    ensure_prometheus,
    remove_scrape_target,
)
from segue_testkit.cluster.settings import state_dir
from segue_testkit.cluster.state import load_state

__all__ = [
    "CRDSource",
    "Proc",
    "add_scrape_target",
    "alive",
    "apiserver",
    "build",
    "crd_files",
    "crd_sources",
    "down",
    "ensure_prometheus",
    "https_ok",
    "install_crds",
    "load_state",
    "remove_scrape_target",
    "state_dir",
    "status",
    "up",
    "up_external",
    "up_kind",
]
