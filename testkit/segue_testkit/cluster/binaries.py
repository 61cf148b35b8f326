"""Building the control plane's binaries (localkube, KWOK, helm) once per set of versions,
cached outside the checkout."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from segue_testkit.cluster.gomod import go_module_dir, go_version
from segue_testkit.cluster.settings import (
    COMPONENTS,
    GO_MODULE,
    cache_root,
    fmt_secs,
    log,
    versions,
)


def bin_dir() -> Path:
    """The cache folder for this exact set of sources and versions."""
    v = versions()
    digest = hashlib.sha256()
    for name in ("versions.env", "go.mod", "go.sum", "cmd/localkube/main.go"):
        digest.update((GO_MODULE / name).read_bytes())
    digest.update(go_version().encode())
    return cache_root() / f"localkube-{v['KUBERNETES_VERSION']}-{digest.hexdigest()[:12]}" / "bin"


def run_with_progress(what: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run a long build, printing elapsed time so a cold build never looks hung."""
    log(f"building {what} ...")
    logfile = cache_root() / "build.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with logfile.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        next_report = 30.0
        while proc.poll() is None:
            time.sleep(1)
            elapsed = time.monotonic() - start
            if elapsed >= next_report:
                log(f"  still building {what}: {fmt_secs(elapsed)} elapsed (log: {logfile})")
                next_report += 30
    if proc.returncode != 0:
        tail = "\n".join(logfile.read_text().splitlines()[-30:])
        raise SystemExit(f"building {what} failed (exit {proc.returncode}):\n{tail}")
    log(f"built {what} in {fmt_secs(time.monotonic() - start)}")


def check_go_mod(v: dict[str, str]) -> None:
    text = (GO_MODULE / "go.mod").read_text()
    for module, key in (
        ("k8s.io/kubernetes", "KUBERNETES_VERSION"),
        ("go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
    ):
        if f"{module} {v[key]}" not in text:
            raise SystemExit(
                f"{GO_MODULE / 'go.mod'} does not require {module} {v[key]} ({key} in versions.env)"
            )


def build() -> Path:
    """Build every binary unless this version's cache folder already has them."""
    v = versions()
    check_go_mod(v)
    dest = bin_dir()
    marker = dest / ".complete"
    if marker.exists():
        log(f"binaries cached in {dest}")
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    kv = v["KUBERNETES_VERSION"]
    major, minor = kv.lstrip("v").split(".")[:2]
    ldflags = ["-s", "-w"]
    # Without these the server reports v0.0.0-master and helm's version checks refuse it.
    for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        ldflags += [
            f"-X {pkg}.gitVersion={kv}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    start = time.monotonic()
    if not (dest / "localkube").exists():
        run_with_progress(
            f"localkube {kv} (etcd {v['ETCD_VERSION']}, kube-apiserver, kube-controller-manager, "
            "kube-scheduler, kubectl)",
            [
                "go",
                "build",
                "-trimpath",
                "-ldflags",
                " ".join(ldflags),
                "-o",
                str(dest / "localkube"),
                "./cmd/localkube",
            ],
            GO_MODULE,
            env,
        )
    for name in COMPONENTS:
        link = dest / name
        if not link.exists():
            link.symlink_to("localkube")
    gobin = dict(env, GOBIN=str(dest))
    if not (dest / "kwok").exists():
        run_with_progress(
            f"kwok {v['KWOK_VERSION']}",
            ["go", "install", f"sigs.k8s.io/kwok/cmd/kwok@{v['KWOK_VERSION']}"],
            GO_MODULE.parent,  # outside the module: `go install pkg@version` stands alone
            gobin,
        )
    if not (dest / "helm").exists():
        hv = v["HELM_VERSION"]
        run_with_progress(
            f"helm {hv}",
            [
                "go",
                "install",
                "-ldflags",
                f"-s -w -X helm.sh/helm/v3/internal/version.version={hv}",
                f"helm.sh/helm/v3/cmd/helm@{hv}",
            ],
            GO_MODULE.parent,
            gobin,
        )
    write_kwok_stages(dest.parent / "kwok-stages.yaml", v["KWOK_VERSION"])
    marker.write_text(json.dumps({"versions": v, "go": go_version()}))
    log(f"binaries ready in {dest} ({fmt_secs(time.monotonic() - start)})")
    return dest


def write_kwok_stages(path: Path, kwok_version: str) -> None:
    """KWOK needs Stage configurations to move fake nodes and pods; they ship in its module."""
    root = go_module_dir("sigs.k8s.io/kwok", kwok_version) / "kustomize/stage"
    docs = []
    for sub in ("node/fast", "node/heartbeat-with-lease", "pod/fast"):
        for f in sorted((root / sub).glob("*.yaml")):
            if f.name != "kustomization.yaml":
                docs.append(f.read_text().strip())
    path.write_text("\n---\n".join(docs) + "\n")
