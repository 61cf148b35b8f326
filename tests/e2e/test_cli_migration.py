"""``kubectl segue`` for Migrations against the real local API server.

No operator runs here: each test writes the status a Migration controller would have written
(through the status subresource), runs the CLI as a separate process, and checks what it
showed and what it wrote on the Migration.
"""

from __future__ import annotations

import json
import os
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

from segue import GROUP, VERSION
from segue.api.migration import MIGRATION_PLURAL
from segue.engine.annotations import APPROVE
from tests.e2e.conftest import Kube
from tests.e2e.support import wait_until

CLI = Path(sys.executable).parent / "kubectl-segue"
NAME = "shop-v2"


def stamp(seconds_ago: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


@pytest.fixture
def ns(kube: Kube, namespace: str, crds: None) -> Iterator[str]:
    """A namespace with the Migration low (catalog) -> medium (cart, orders) -> critical
    (payments, approval), rollback scope wave."""
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Migration",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "rollbackScope": "wave",
            "waves": [
                {"name": "low", "rollouts": ["catalog"], "bakeTime": "1m"},
                {"name": "medium", "rollouts": ["cart", "orders"]},
                {"name": "critical", "rollouts": ["payments"], "approval": True},
            ],
        },
    }
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    yield namespace


def members(*items: tuple[str, str, int]) -> list[dict[str, Any]]:
    return [{"name": n, "phase": p, "weight": w} for n, p, w in items]


def rolling_back(outcome: str = "InProgress") -> dict[str, Any]:
    """Wave medium returning to legacy: cart's error-rate gate failed, orders had Succeeded."""
    done = outcome != "InProgress"
    record: dict[str, Any] = {
        "id": "rb-1",
        "scope": "wave",
        "trigger": {"rollout": "cart", "gate": "error-rate", "value": 0.2, "legacyValue": 0.0,
                    "bound": "<= 0.05", "actor": "gate error-rate"},
        "members": ["cart", "orders"],
        "initiatedAt": stamp(60),
        "outcome": outcome,
    }  # fmt: skip
    if done:
        record["completedAt"] = stamp()
    return {
        "phase": "RolledBack" if done else "RollingBack",
        "wave": 1,
        "message": "rollback rb-1 (wave scope): cart gate error-rate",
        "waves": [
            {"name": "low", "phase": "Succeeded", "startedAt": stamp(600),
             "succeededAt": stamp(400), "bakeUntil": stamp(340),
             "members": members(("catalog", "Succeeded", 100))},
            {"name": "medium", "phase": "RolledBack" if done else "RollingBack",
             "startedAt": stamp(300),
             "members": members(("cart", "RolledBack", 0),
                                ("orders", "RolledBack" if done else "RollingBack",
                                 0 if done else 50))},
            {"name": "critical", "phase": "Pending",
             "members": members(("payments", "Waiting", 0))},
        ],
        "rollbacks": [record],
    }  # fmt: skip


def awaiting_critical() -> dict[str, Any]:
    return {
        "phase": "AwaitingApproval",
        "wave": 1,
        "message": "wave 2 (critical) waits for segue.dev/approve=2",
        "waves": [
            {"name": "low", "phase": "Succeeded", "startedAt": stamp(600),
             "succeededAt": stamp(400), "members": members(("catalog", "Succeeded", 100))},
            {"name": "medium", "phase": "Succeeded", "startedAt": stamp(300),
             "succeededAt": stamp(30),
             "members": members(("cart", "Succeeded", 100), ("orders", "Succeeded", 100))},
            {"name": "critical", "phase": "Pending",
             "members": members(("payments", "Waiting", 0))},
        ],
    }  # fmt: skip


def set_status(kube: Kube, ns: str, status: dict[str, Any]) -> None:
    """What the Migration controller would write (a full replacement of the lists)."""
    kube.kubectl(
        "patch", "migration.segue.dev", NAME, "-n", ns, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip


def cli(kube: Kube, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "--kubeconfig", kube.kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )


def test_get_shows_waves_members_and_the_rollback_log(kube: Kube, ns: str) -> None:
    set_status(kube, ns, rolling_back())
    r = cli(kube, "get", "migration", NAME, "-n", ns)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    print(r.stdout)
    assert lines[0].startswith(f"Migration {ns}/{NAME}")
    for expected in (
        "Phase     RollingBack",
        "Scope     wave: a member's rollback returns its whole wave to legacy",
        "Wave      1/3 medium",
        "       catalog   Succeeded    [####################] 100%",
        "       cart      RolledBack   [....................]   0%",
        "       orders    RollingBack  [##########..........]  50%",
        "       payments  Waiting      [....................]   0%",
        "    trigger   cart: gate error-rate = 0.2 (legacy 0), bound <= 0.05",
        "    members   cart, orders",
    ):
        assert expected in lines, f"{expected!r} not in:\n{r.stdout}"
    assert any(line.startswith("  > 1  medium    RollingBack  started ") for line in lines)
    assert any(line.startswith("  rb-1  wave  InProgress  ") for line in lines)

    table = cli(kube, "get", "migrations", "-n", ns)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "WAVE", "DONE", "ROLLBACKS", "AGE", "MESSAGE"]
    assert row.split()[:6] == [NAME, "RollingBack", "1/3", "medium", "1/4", "1"]

    set_status(kube, ns, rolling_back("Completed"))
    history = cli(kube, "history", "migration", NAME, "-n", ns)
    assert history.returncode == 0, history.stderr
    log = history.stdout.splitlines()
    assert log[0] == f"Rollbacks of migration {ns}/{NAME} (1, oldest first)"
    assert log[1].startswith("  rb-1  wave  Completed  ") and log[1].endswith("(1m00s)")
    assert log[2] == "    trigger   cart: gate error-rate = 0.2 (legacy 0), bound <= 0.05"

    missing = cli(kube, "get", "migration", "nope", "-n", ns)
    assert missing.returncode == 1
    assert missing.stderr == f"error: migration {ns}/nope not found\n"
    empty = cli(kube, "get", "migrations", "-n", "default")
    assert empty.returncode == 0 and empty.stderr == "No migrations found in namespace default.\n"


def test_approve_writes_the_waiting_wave_and_who_approved(kube: Kube, ns: str) -> None:
    refused = cli(kube, "approve", "migration", NAME, "-n", ns)
    assert refused.returncode == 1
    assert "has no status yet (is the operator running?)" in refused.stderr
    set_status(kube, ns, awaiting_critical())
    stale = cli(kube, "approve", "migration", NAME, "-n", ns, "--wave", "1")
    assert stale.returncode == 1
    assert stale.stderr == (
        f"error: migration {ns}/{NAME} waits for approval of wave 2 (critical), not wave 1; "
        "nothing approved\n"
    )
    r = cli(kube, "approve", "migration", NAME, "-n", ns, "--wave", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"migration {ns}/{NAME}: approved wave 2 (critical); it starts at the operator's "
        "next pass\n"
    )
    obj = client.CustomObjectsApi(kube.api_client).get_namespaced_custom_object(
        GROUP, VERSION, ns, MIGRATION_PLURAL, NAME
    )
    assert isinstance(obj, dict)
    annotations = obj["metadata"]["annotations"]
    assert annotations[APPROVE] == "2"
    who = kube.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    assert annotations["segue.dev/approved-by"] == who
    again = cli(kube, "approve", "migration", NAME, "-n", ns)
    assert again.stdout == (
        f"migration {ns}/{NAME}: approval of wave 2 (critical) already requested\n"
    )


def test_watch_redraws_on_each_change_of_the_migration(kube: Kube, ns: str) -> None:
    set_status(kube, ns, rolling_back())
    proc = subprocess.Popen(
        [str(CLI), "--kubeconfig", kube.kubeconfig, "get", "migration", NAME, "-n", ns, "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
    reader.start()

    def shown(text: str) -> None:
        wait_until(f"{text!r} in the watch output", lambda: "".join(out), lambda s: text in s, 30)

    try:
        shown("rb-1  wave  InProgress")
        set_status(kube, ns, rolling_back("Completed"))
        shown("rb-1  wave  Completed")
        # A change that alters nothing shown (a watch event all the same) prints no block;
        # ticks without a change print none either (unit-tested with a scripted clock).
        kube.kubectl("annotate", "migration.segue.dev", NAME, "-n", ns, "example.com/note=x")
        set_status(kube, ns, rolling_back("Failed"))
        shown("rb-1  wave  Failed")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        reader.join(timeout=5)
    text = "".join(out)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert text.count(f"Migration {ns}/{NAME}") == 3, text
    assert "Phase     RolledBack" in text
    assert all(len(line.rstrip("\n")) <= 80 for line in out)
