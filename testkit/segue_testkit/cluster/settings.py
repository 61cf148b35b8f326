"""Where the cluster's sources, binaries and state live, and the versions it is built from."""

from __future__ import annotations

import os
from pathlib import Path

GO_MODULE = Path(__file__).resolve().parent / "localkube"
VERSIONS_FILE = GO_MODULE / "versions.env"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
NODE_COUNT = 3
SERVICE_CIDR = "10.96.0.0/24"
POD_CIDR = "10.244.0.0/16"


def log(msg: str) -> None:
    print(f"[cluster] {msg}", flush=True)


def fmt_secs(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.1f}s"


def versions() -> dict[str, str]:
    """The pinned versions in localkube/versions.env, by name."""
    out: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def cache_root() -> Path:
    return Path(os.environ.get("SEGUE_CACHE_DIR", Path.home() / ".cache" / "segue"))


def state_dir() -> Path:
    return Path(os.environ.get("SEGUE_CLUSTER_DIR", "/tmp/segue-cluster"))


def apiserver_profiling() -> bool:
    """Whether the API server serves /debug/pprof (SEGUE_APISERVER_PROFILING=1): off by
    default, as in a hardened cluster; on, a benchmark can see where the API server's CPU
    goes (hack/bench_scale.py's docstring says how)."""
    return os.environ.get("SEGUE_APISERVER_PROFILING", "") == "1"
