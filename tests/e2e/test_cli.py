"""``kubectl segue`` against the real local API server.

The operator is not running here: each test writes the status a real operator would have
written (through the status subresource), runs the CLI as a separate process, and checks
what the CLI wrote on the Rollout and what it told the user.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from segue import GROUP, PLURAL, VERSION
from segue.engine.annotations import ABORT, APPROVE, PAUSE, PROMOTE, RETRY
from tests.e2e.conftest import Kube

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "kubectl-segue"
NAME = "checkout"


@pytest.fixture(scope="module")
def rollout_crd(kube: Kube) -> None:
    kube.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f",
        str(ROOT / "crds" / "rollouts.segue.dev.yaml"),
    )  # fmt: skip
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/rollouts.segue.dev")


@pytest.fixture
def ns(kube: Kube, namespace: str, rollout_crd: None) -> Iterator[str]:
    """A namespace with one Rollout whose plan is: 0 setWeight 5, 1 pause 1m,
    2 setWeight 25, 3 pause 30m, 4 approval, 5 setWeight 50, 6 setWeight 100."""
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "legacy": {"deployment": "checkout-v1"},
            "new": {"deployment": "checkout-v2"},
            "traffic": {"replicas": {}},
            "steps": [
                {"setWeight": 5},
                {"pause": {"duration": "1m"}},
                {"setWeight": 25},
                {"pause": {"duration": "30m"}},
                {"approval": {}},
                {"setWeight": 50},
            ],
            "analysis": {"gates": [{"name": "error-rate", "query": "errors", "max": 0.05}]},
        },
    }
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    yield namespace


def objects(kube: Kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api_client)


def get(kube: Kube, ns: str) -> dict[str, Any]:
    obj = objects(kube).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME)
    assert isinstance(obj, dict)
    return obj


def annotations_of(kube: Kube, ns: str) -> dict[str, str]:
    return dict(get(kube, ns)["metadata"].get("annotations") or {})


def set_status(kube: Kube, ns: str, **status: Any) -> None:
    """What the operator would write: the phase, the step and a little history."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = {
        "status": {
            "step": 0,
            "totalSteps": 7,
            "weight": 0,
            "targetWeight": 0,
            "stepStartedAt": now,
            "history": [
                {"time": now, "step": 0, "weight": 0, "event": "Pending", "reason": "new Rollout"}
            ],
            **status,
        }
    }
    kube.kubectl(
        "patch", "rollout.segue.dev", NAME, "-n", ns,
        "--subresource=status", "--type=merge", "-p", json.dumps(body),
    )  # fmt: skip


def remove_annotation(kube: Kube, ns: str, key: str) -> None:
    """What the operator does once it handled a one-shot annotation."""
    kube.kubectl("annotate", "rollout.segue.dev", NAME, "-n", ns, f"{key}-")


def cli(kube: Kube, *args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "--kubeconfig", kubeconfig or kube.kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_approve_writes_the_waiting_step(kube: Kube, ns: str) -> None:
    set_status(kube, ns, phase="AwaitingApproval", step=4, weight=25, targetWeight=25)
    r = cli(kube, "approve", NAME, "-n", ns)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"rollout {ns}/{NAME}: approved step 4 (approval before setWeight 50)\n"
    assert annotations_of(kube, ns)[APPROVE] == "4"
    managers = {f["manager"] for f in get(kube, ns)["metadata"]["managedFields"]}
    assert "segue-cli" in managers
    # Asking again while the operator has not acted yet writes nothing and is not an error.
    again = cli(kube, "approve", NAME, "-n", ns)
    assert again.returncode == 0
    assert "already requested" in again.stdout


def test_approve_is_refused_when_nothing_waits(kube: Kube, ns: str) -> None:
    set_status(kube, ns, phase="Progressing", step=2, weight=5, targetWeight=25)
    r = cli(kube, "approve", NAME, "-n", ns)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: rollout {ns}/{NAME} is Progressing at step 2; nothing awaits approval "
        "(the next approval is step 4)\n"
    )
    assert APPROVE not in annotations_of(kube, ns)
    # The step guard: approving a step that is not the waiting one is refused.
    set_status(kube, ns, phase="AwaitingApproval", step=4, weight=25, targetWeight=25)
    stale = cli(kube, "approve", NAME, "-n", ns, "--step", "2")
    assert stale.returncode == 1
    assert "waits for approval of step 4, not step 2" in stale.stderr
    assert APPROVE not in annotations_of(kube, ns)


def test_missing_rollout_and_missing_status(kube: Kube, ns: str) -> None:
    r = cli(kube, "abort", "nope", "-n", ns)
    assert r.returncode == 1
    assert r.stderr == f"error: rollout {ns}/nope not found\n"
    fresh = cli(kube, "approve", NAME, "-n", ns)  # no operator has written a status yet
    assert fresh.returncode == 1
    assert "has no status yet" in fresh.stderr


def test_retry_only_after_a_rollback_and_never_with_the_same_value(kube: Kube, ns: str) -> None:
    set_status(kube, ns, phase="Progressing", step=3, weight=25, targetWeight=25)
    refused = cli(kube, "retry", NAME, "-n", ns)
    assert refused.returncode == 1
    assert f"rollout {ns}/{NAME} is Progressing; retry applies after a rollback" in refused.stderr
    assert RETRY not in annotations_of(kube, ns)

    set_status(kube, ns, phase="RolledBack", step=3)
    first = cli(kube, "retry", NAME, "-n", ns)
    assert first.returncode == 0, first.stderr
    assert "retry requested" in first.stdout
    value = annotations_of(kube, ns)[RETRY]
    remove_annotation(kube, ns, RETRY)
    second = cli(kube, "retry", NAME, "-n", ns)
    assert second.returncode == 0, second.stderr
    assert annotations_of(kube, ns)[RETRY] != value


def test_pause_resume_promote_abort(kube: Kube, ns: str) -> None:
    set_status(kube, ns, phase="Progressing", step=3, weight=25, targetWeight=25)
    r = cli(kube, "pause", NAME, "-n", ns, "--reason", "change freeze")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"rollout {ns}/{NAME}: paused at step 3 (25%): change freeze")
    assert annotations_of(kube, ns)[PAUSE] == "change freeze"

    r = cli(kube, "resume", NAME, "-n", ns)
    assert r.returncode == 0, r.stderr
    assert PAUSE not in annotations_of(kube, ns)
    r = cli(kube, "resume", NAME, "-n", ns)
    assert r.returncode == 1
    assert "nothing to resume" in r.stderr

    r = cli(kube, "promote", NAME, "-n", ns)
    assert r.returncode == 0, r.stderr
    assert "straight to 100%" in r.stdout
    assert annotations_of(kube, ns)[PROMOTE]

    r = cli(kube, "abort", NAME, "-n", ns, "--reason", "p99 doubled")
    assert r.returncode == 0, r.stderr
    assert annotations_of(kube, ns)[ABORT] == "p99 doubled"

    set_status(kube, ns, phase="Succeeded", step=7, weight=100, targetWeight=100)
    for command in ("promote", "pause"):
        r = cli(kube, command, NAME, "-n", ns)
        assert r.returncode == 1, command
        assert f"rollout {ns}/{NAME} is Succeeded" in r.stderr
    # Abort after success is the operator's to decide (legacy may be gone).
    remove_annotation(kube, ns, ABORT)
    r = cli(kube, "abort", NAME, "-n", ns, "--reason", "errors after the release")
    assert r.returncode == 0, r.stderr
    assert "to the legacy Deployment, or refuses if it no longer exists" in r.stdout
    assert annotations_of(kube, ns)[ABORT] == "errors after the release"


def test_get_history_and_the_context_namespace(kube: Kube, ns: str, tmp_path: Path) -> None:
    set_status(kube, ns, phase="AwaitingApproval", step=4, weight=25, targetWeight=25,
               message="step 4 waits for approval at 25%")  # fmt: skip
    r = cli(kube, "get", "-n", ns)
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "STEP", "WEIGHT", "AGE", "MESSAGE"]
    assert row.split()[:4] == [NAME, "AwaitingApproval", "4/7", "25%"]

    everywhere = cli(kube, "get", "-A")
    assert any(line.split()[:2] == [ns, NAME] for line in everywhere.stdout.splitlines())

    # Without -n the namespace comes from the kubeconfig context.
    config = yaml.safe_load(Path(kube.kubeconfig).read_text())
    for ctx in config["contexts"]:
        if ctx["name"] == config["current-context"]:
            ctx["context"]["namespace"] = ns
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    r = cli(kube, "get", NAME, kubeconfig=str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split()[:2] == [NAME, "AwaitingApproval"]

    history = cli(kube, "history", NAME, "-n", ns)
    assert history.returncode == 0, history.stderr
    assert history.stdout.splitlines()[0].split() == ["TIME", "STEP", "WEIGHT", "EVENT", "DETAIL"]
    assert "Pending" in history.stdout and "new Rollout" in history.stdout

    empty = cli(kube, "get", "-n", "default")
    assert empty.returncode == 0
    assert empty.stderr == "No rollouts found in namespace default.\n"


def test_watch_prints_a_block_per_change_and_ends_on_ctrl_c(kube: Kube, ns: str) -> None:
    set_status(kube, ns, phase="Progressing", step=3, weight=25, targetWeight=25,
               message="step 3: holding at 25%")  # fmt: skip
    proc = subprocess.Popen(
        [str(CLI), "--kubeconfig", kube.kubeconfig, "get", NAME, "-n", ns, "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
    reader.start()

    def wait_for(text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in "".join(out):
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in watch output:\n{''.join(out)}")

    try:
        wait_for("Progressing")
        wait_for("> 3  pause 30m")
        set_status(kube, ns, phase="AwaitingApproval", step=4, weight=25, targetWeight=25,
                   message="step 4 waits for approval at 25%")  # fmt: skip
        wait_for("waiting for approval")
        time.sleep(2.5)  # ticks pass: a pipe gets no new block for a moving countdown
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        reader.join(timeout=5)
    text = "".join(out)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert "\x1b" not in text
    assert text.count(f"Rollout {ns}/{NAME}") == 2, text
    assert all(len(line.rstrip("\n")) <= 80 for line in out)
    assert "[" + "#" * 10 + "." * 30 + "]  25%" in text
