#!/usr/bin/env python3
"""A real, small Kubernetes control plane and Prometheus on loopback, built from source.

There is no Docker engine here, so kind cannot run. Instead this script builds etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kubectl as one multi-call binary
from Go modules (hack/localkube), installs KWOK (fake nodes and pods) and helm, caches all of
it outside the checkout keyed by version, and starts the components on 127.0.0.1.

    python hack/cluster.py build     # build (or reuse) the binaries
    python hack/cluster.py up        # start etcd, apiserver, controllers, KWOK, Prometheus
    python hack/cluster.py env       # print `export KUBECONFIG=...` lines for a shell
    python hack/cluster.py status
    python hack/cluster.py apiserver stop|start   # an API server outage: only kube-apiserver
    python hack/cluster.py down      # stop exactly what `up` started, remove its data

Environment: SEGUE_CACHE_DIR (default ~/.cache/segue) for binaries; SEGUE_CLUSTER_DIR
(default /tmp/segue-cluster) for state, kubeconfig and logs; SEGUE_CLUSTER=kind to use kind
where a Docker daemon runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HACK = Path(__file__).resolve().parent
GO_MODULE = HACK / "localkube"
VERSIONS_FILE = GO_MODULE / "versions.env"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
NODE_COUNT = 3
SERVICE_CIDR = "10.96.0.0/24"
POD_CIDR = "10.244.0.0/16"


def log(msg: str) -> None:
    print(f"[cluster] {msg}", flush=True)


def versions() -> dict[str, str]:
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


def go_version() -> str:
    return subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True
    ).stdout.strip()


def bin_dir() -> Path:
    """The cache folder for this exact set of sources and versions."""
    v = versions()
    digest = hashlib.sha256()
    for name in ("versions.env", "go.mod", "go.sum", "cmd/localkube/main.go"):
        digest.update((GO_MODULE / name).read_bytes())
    digest.update(go_version().encode())
    return cache_root() / f"localkube-{v['KUBERNETES_VERSION']}-{digest.hexdigest()[:12]}" / "bin"


def go_module_dir(module: str, version: str) -> Path:
    """Download a Go module through the module proxy and return its folder."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout
    return Path(json.loads(out)["Dir"])


def gateway_api_crds() -> list[Path]:
    """The real Gateway API CRDs, taken from the sigs.k8s.io/gateway-api Go module."""
    root = go_module_dir("sigs.k8s.io/gateway-api", versions()["GATEWAY_API_VERSION"])
    names = ("gatewayclasses", "gateways", "httproutes", "referencegrants")
    return [root / "config/crd/standard" / f"gateway.networking.k8s.io_{n}.yaml" for n in names]


# --- building ----------------------------------------------------------------------------


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


def fmt_secs(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.1f}s"


def check_go_mod(v: dict[str, str]) -> None:
    text = (GO_MODULE / "go.mod").read_text()
    for module, key in (
        ("k8s.io/kubernetes", "KUBERNETES_VERSION"),
        ("go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
    ):
        if f"{module} {v[key]}" not in text:
            raise SystemExit(
                f"hack/localkube/go.mod does not require {module} {v[key]} ({key} in versions.env)"
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
            HACK,
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
            HACK,
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


# --- certificates ---------------------------------------------------------------------------


def make_pki(pki: Path) -> None:
    """A CA, a serving certificate for the API server, client certificates and SA keys."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def key_pem(key: Any) -> bytes:
        return key.private_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("segue-local-ca"))
        .issuer_name(name("segue-local-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (pki / "ca.key").write_bytes(key_pem(ca_key))

    def issue(file: str, cn: str, org: str | None, server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn, org))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            first_service_ip = next(ipaddress.IPv4Network(SERVICE_CIDR).hosts())
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.DNSName("kubernetes.default.svc.cluster.local"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(first_service_ip),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        (pki / f"{file}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (pki / f"{file}.key").write_bytes(key_pem(key))

    issue("apiserver", "kube-apiserver", None, server=True)
    issue("admin", "segue-admin", "system:masters", server=False)
    issue("controller-manager", "system:kube-controller-manager", None, server=False)
    issue("scheduler", "system:kube-scheduler", None, server=False)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(key_pem(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    path.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: v1
            kind: Config
            clusters:
            - name: segue-local
              cluster:
                server: {server}
                certificate-authority: {pki / "ca.crt"}
            users:
            - name: {user}
              user:
                client-certificate: {pki / f"{user}.crt"}
                client-key: {pki / f"{user}.key"}
            contexts:
            - name: segue-local
              context: {{cluster: segue-local, user: {user}, namespace: default}}
            current-context: segue-local
            """
        )
    )


# --- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    pid: int
    argv0: str
    argv: list[str] = field(default_factory=list)  # to start it again (`apiserver start`)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(name: str, argv: list[str], logs: Path, mode: str = "wb") -> Proc:
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open(mode) as out:
        # A new session: the components outlive this script and are stopped by pid.
        p = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, p.pid, argv[0], argv)


def start(name: str, argv: list[str], logs: Path, procs: list[Proc]) -> None:
    procs.append(spawn(name, argv, logs))
    save_state(procs, extra=None)


def alive(proc: Proc) -> bool:
    """True if the pid still runs the program we started (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    zombie = stat.rsplit(")", 1)[1].split()[0] == "Z"
    return cmdline == proc.argv0 and not zombie


def state_file() -> Path:
    return state_dir() / "state.json"


def save_state(procs: list[Proc], extra: dict[str, Any] | None) -> None:
    state_dir().mkdir(parents=True, exist_ok=True)
    old = load_state()
    data = {"procs": [p.__dict__ for p in procs], **(old.get("info", {}) and {"info": old["info"]})}
    if extra is not None:
        data["info"] = extra
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(state_file())


def load_state() -> dict[str, Any]:
    try:
        return json.loads(state_file().read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def running_procs() -> list[Proc]:
    return [Proc(**p) for p in load_state().get("procs", [])]


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, logs: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.25)
    hint = f" (logs in {logs})" if logs else ""
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}{hint}")


def https_ok(url: str, pki: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
        return bool(r.status == 200)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)


def kubectl(bins: Path, kubeconfig: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        [str(bins / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        check=True,
        capture_output=True,
        text=True,
        input=input,
    ).stdout


def fake_nodes_manifest(count: int) -> str:
    docs = []
    for i in range(count):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"kwok-node-{i}",
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": f"kwok-node-{i}",
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                    },
                },
                "spec": {},
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            }
        )
    return "\n---\n".join(json.dumps(d) for d in docs)


# --- prometheus -----------------------------------------------------------------------------


def ensure_prometheus() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    log("installing Debian's prometheus package (once per machine) ...")
    apt_env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=apt_env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
        check=True,
        env=apt_env,
    )
    # The package starts a system service where an init system runs; ours is separate.
    with contextlib.suppress(Exception):
        subprocess.run([*sudo, "service", "prometheus", "stop"], capture_output=True, check=False)
    found = shutil.which("prometheus")
    if not found:
        raise SystemExit("prometheus is still not on PATH after installing the Debian package")
    return found


def prometheus_config(targets_dir: Path) -> str:
    return textwrap.dedent(
        f"""\
        # Generated by hack/cluster.py. Targets are files in {targets_dir}: tests and the demo
        # drop a JSON file there and Prometheus picks it up within a second.
        global:
          scrape_interval: 1s
          scrape_timeout: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: segue
            file_sd_configs:
              - files: ["{targets_dir}/*.json"]
                refresh_interval: 1s
        """
    )


def add_scrape_target(job: str, host_port: str) -> Path:
    """Ask the running Prometheus to scrape host_port every second, labelled job=<job>."""
    info = load_state().get("info", {})
    targets = Path(info["prometheus_targets"])
    path = targets / f"{job}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [host_port], "labels": {"job": job}}]))
    tmp.replace(path)
    return path


def remove_scrape_target(job: str) -> None:
    info = load_state().get("info", {})
    (Path(info["prometheus_targets"]) / f"{job}.json").unlink(missing_ok=True)


# --- up / down ------------------------------------------------------------------------------


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
            "--profiling=false",
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


def start_prometheus(root: Path, logs: Path, procs: list[Proc]) -> dict[str, Any]:
    prom = ensure_prometheus()
    pdir = root / "prometheus"
    targets = pdir / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    (pdir / "prometheus.yml").write_text(prometheus_config(targets))
    port = free_port()
    log("starting prometheus")
    start(
        "prometheus",
        [
            prom,
            f"--config.file={pdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data' / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=6h",
            "--log.level=warn",
        ],
        logs,
        procs,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for("prometheus", lambda: http_ok(f"{url}/-/ready"), 60, logs)
    return {"prometheus": url, "prometheus_targets": str(targets)}


def up_kind(with_prometheus: bool) -> dict[str, Any]:
    """Where kind and a Docker daemon exist, the same tests can run on a kind cluster."""
    if (
        not shutil.which("kind")
        or subprocess.run(["docker", "info"], capture_output=True).returncode
    ):
        raise SystemExit("SEGUE_CLUSTER=kind needs `kind` on PATH and a running Docker daemon")
    root = state_dir()
    root.mkdir(parents=True, exist_ok=True)
    kubeconfig = root / "kubeconfig"
    if subprocess.run(
        ["kind", "get", "kubeconfig", "--name", "segue"], capture_output=True
    ).returncode:
        subprocess.run(
            ["kind", "create", "cluster", "--name", "segue", "--kubeconfig", str(kubeconfig)],
            check=True,
        )
    procs: list[Proc] = []
    info: dict[str, Any] = {
        "kubeconfig": str(kubeconfig),
        "kind": True,
        "logs": str(root / "logs"),
        "bin_dir": str(build()),
    }
    if with_prometheus:
        info.update(start_prometheus(root, root / "logs", procs))
    save_state(procs, extra=info)
    print_usage(info)
    return info


def up_external(kubeconfig: str) -> dict[str, Any]:
    """Use a cluster someone else runs; only Prometheus (and the binaries) are ours."""
    root = state_dir()
    running = load_state()
    if running.get("procs") and all(alive(Proc(**p)) for p in running["procs"]):
        return dict(running["info"])
    procs: list[Proc] = []
    info: dict[str, Any] = {
        "kubeconfig": kubeconfig,
        "kind": False,
        "external": True,
        "logs": str(root / "logs"),
        "bin_dir": str(build()),
    }
    info.update(start_prometheus(root, root / "logs", procs))
    save_state(procs, extra=info)
    return info


def print_usage(info: dict[str, Any]) -> None:
    print(
        textwrap.dedent(f"""
        Local cluster ready.
          export KUBECONFIG={info["kubeconfig"]}
          export PATH={info["bin_dir"]}:$PATH      # kubectl and helm matching the server
          kubectl get nodes
        Prometheus: {info.get("prometheus", "not started")}
        Logs: {info["logs"]}
        Stop it with: python hack/cluster.py down
        """),
        flush=True,
    )


def stop_proc(p: Proc, grace: float = 10) -> None:
    if not alive(p):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(p):
        time.sleep(0.1)
    if alive(p):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)


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


def env_lines() -> Iterator[str]:
    info = load_state().get("info", {})
    if not info:
        raise SystemExit("no cluster is running; start one with: python hack/cluster.py up")
    yield f"export KUBECONFIG={info['kubeconfig']}"
    yield f"export PATH={info['bin_dir']}:$PATH"
    if "prometheus" in info:
        yield f"export SEGUE_PROMETHEUS_ADDRESS={info['prometheus']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
        "env", help='print export lines for a shell: eval "$(python hack/cluster.py env)"'
    )
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
    elif args.cmd == "gateway-crds":
        print("\n".join(str(p) for p in gateway_api_crds()))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
