#!/usr/bin/env python3
"""The Segue demo: a local cluster, Prometheus, the operator, three Rollouts and a Migration.

1. checkout: healthy metrics; Segue walks the low-risk preset (holds shortened) to 100 %.
2. payments: 20 % errors are injected into the new version at 25 %; the error-rate gate
   fails and Segue returns all traffic to legacy by itself, with the numbers in status.
3. search: a developer who may edit Rollouts but not approve them is refused by the API
   server (the chart's admission policies, bound to the demo's namespace); a person then
   aborts mid-way, history names them, and traffic returns to legacy.
4. shop-v2: a Migration in three waves (low: inventory; medium: orders and cart; critical:
   billing, after an approval) with rollbackScope wave. orders succeeds, then cart's new
   version starts failing: its gate rolls cart back and the Migration returns the whole
   medium wave to legacy, orders (already Succeeded, graceful 10s ramp) included; the
   critical wave never starts. `kubectl segue get migration` shows it during and after,
   with the rollback log.

    python hack/demo.py            # or: make demo
    python hack/demo.py --keep     # leave the operator and simulators running afterwards

The cluster stays up afterwards for exploring (`python -m segue_testkit.cluster down` stops
it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from segue.cli.migration import MigrationView
from segue.cli.render_migration import migration_frame
from segue_testkit import scenario
from segue_testkit.scenario import Env

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "segue-demo"
BAR = 20


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def gates(app: str) -> dict[str, Any]:
    labels = {"app": app, "window": "5s"}
    return {
        "interval": "2s",
        "gates": [
            {"name": "error-rate", "template": "error-rate", "labels": labels},
            {"name": "latency", "template": "latency", "labels": labels},
        ],
    }


def line(obj: dict[str, Any]) -> str:
    st = obj.get("status") or {}
    weight = int(st.get("weight", 0))
    filled = round(BAR * weight / 100)
    bar = "#" * filled + "." * (BAR - filled)
    gate_text = "  ".join(
        f"{g['name']} {_num(g.get('value'))} ({g.get('bound', '')}) {g.get('verdict') or '-'}"
        for g in st.get("gates", [])
    )
    step = f"{st.get('step', 0)}/{st.get('totalSteps', '?')}"
    head = f"  {obj['metadata']['name']:<9} {st.get('phase') or 'Pending':<16} step {step:<6}"
    return f"{head} [{bar}] {weight:>3}%  {gate_text}".rstrip()


def _num(v: Any) -> str:
    return "no data" if v is None else f"{float(v):.3f}"


def follow(
    env: Env, name: str, until: set[str], timeout: float = 300, on_weight: Any = None
) -> Any:
    """Print a line whenever the Rollout's phase, step, weight or verdicts change."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        obj = env.get_json(NAMESPACE, "rollout.segue.dev", name)
        if obj:
            text = line(obj)
            key = (
                text.split("[")[0]
                + text.split("]")[1].split("  ")[0]
                + str([g.get("verdict") for g in (obj.get("status") or {}).get("gates", [])])
            )
            if key != last:
                print(text, flush=True)
                last = key
            status = obj.get("status") or {}
            if on_weight is not None:
                on_weight(status)
            if status.get("phase") in until:
                return obj
        time.sleep(0.5)
    raise SystemExit(f"{name} did not reach {sorted(until)} in {timeout:.0f}s")


def install_admission(env: Env) -> None:
    """The chart's admission policies as shipped for installs without Helm
    (deploy/admission.yaml), bound to the demo's namespace only, and a user ``dev`` who may
    edit Rollouts there but holds no ``approve``."""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "admission.yaml").read_text()) if d]
    for doc in docs:
        if doc["kind"].endswith("PolicyBinding"):
            selector = {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
            doc["spec"]["matchResources"] = {"namespaceSelector": selector}
    env.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    rbac = "rbac.authorization.k8s.io/v1"
    role = {
        "apiVersion": rbac,
        "kind": "Role",
        "metadata": {"name": "rollout-editor"},
        "rules": [
            {
                "apiGroups": ["segue.dev"],
                "resources": ["rollouts"],
                "verbs": ["get", "list", "watch", "patch", "update"],
            }
        ],
    }
    binding = {
        "apiVersion": rbac,
        "kind": "RoleBinding",
        "metadata": {"name": "rollout-editor-dev"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "rollout-editor",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev"}],
    }
    env.apply(NAMESPACE, role, binding)


def refused(env: Env, *args: str) -> str:
    """What the API server answers a kubectl command it refuses (empty if it accepts it)."""
    kubectl = Path(env.info["bin_dir"]) / "kubectl"
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={env.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stderr.strip() if result.returncode else ""


def history(obj: dict[str, Any], last: int = 6) -> None:
    for h in (obj.get("status") or {}).get("history", [])[-last:]:
        numbers = ""
        if h.get("gate"):
            numbers = (
                f" [gate {h['gate']}: value {_num(h.get('value'))}, legacy "
                f"{_num(h.get('legacyValue'))}, bound {h.get('bound')}]"
            )
        print(f"    {h['time'][11:19]} step {h['step']:>2} {h['weight']:>3}% {h['event']:<12} "
              f"{h.get('reason') or ''}{numbers}")  # fmt: skip


MIGRATION = "shop-v2"
WAVES = {"low": ["inventory"], "medium": ["orders", "cart"], "critical": ["billing"]}
CLI_WIDTH = 88


def segue_cli(env: Env, *args: str) -> str:
    """What ``kubectl segue ARGS`` prints (run as a separate process, as a person would)."""
    result = subprocess.run(
        [sys.executable, "-m", "segue.cli.main", "--kubeconfig", env.kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": str(CLI_WIDTH)},
    )
    return (result.stdout + result.stderr).rstrip()


def indented(text: str) -> str:
    return "  " + text.replace("\n", "\n  ")


def migration_line(obj: dict[str, Any]) -> str:
    """The Migration's phase and wave, and each member's phase and weight, on one line."""
    st = obj.get("status") or {}
    members = "  ".join(
        f"{m['name']} {m.get('phase') or '-'} {m.get('weight', 0)}%"
        for w in st.get("waves", [])
        for m in w.get("members", [])
    )
    return f"  {st.get('phase') or 'Pending':<16} wave {st.get('wave', 0)}  {members}"


def follow_migration(
    env: Env, until: set[str], timeout: float = 300, on_change: Any = None
) -> dict[str, Any]:
    """Print a line whenever the Migration's phases or weights change; ``on_change(obj)``
    sees every new state (it may print the full view)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        obj = env.get_json(NAMESPACE, "migration.segue.dev", MIGRATION)
        if obj:
            text = migration_line(obj)
            if text != last:
                print(text, flush=True)
                last = text
                if on_change is not None:
                    on_change(obj)
            if (obj.get("status") or {}).get("phase") in until:
                return obj
        time.sleep(0.3)
    raise SystemExit(f"migration {MIGRATION} did not reach {sorted(until)} in {timeout:.0f}s")


def migration_scenario(env: Env, sims: dict[str, scenario.Sim], logs: Path) -> None:
    say(
        f"4/4 {MIGRATION}: a Migration in three waves, low (inventory) -> medium (orders, cart) "
        "-> critical (billing, after an approval), rollbackScope: wave"
    )
    for app in [a for apps in WAVES.values() for a in apps]:
        scenario.service_pair(env, NAMESPACE, app)
        sims[app] = scenario.start_sim(env, NAMESPACE, app, logs)
    waves = [{"name": "low", "rollouts": WAVES["low"], "bakeTime": "3s"},
             {"name": "medium", "rollouts": WAVES["medium"]},
             {"name": "critical", "rollouts": WAVES["critical"], "approval": True}]  # fmt: skip
    env.apply(
        NAMESPACE,
        {
            "apiVersion": "segue.dev/v1alpha1",
            "kind": "Migration",
            "metadata": {"name": MIGRATION},
            "spec": {"rollbackScope": "wave", "waves": waves},
        },
    )
    scenario.wait_for(
        f"the operator to take up migration {MIGRATION}",
        lambda: env.get_json(NAMESPACE, "migration.segue.dev", MIGRATION).get("status", {}),
        lambda st: bool(st.get("phase")),
        60,
    )
    quick = [{"setWeight": 50}, {"pause": {"duration": "2s"}}]
    # cart holds 1m at 50 %: long enough for orders to succeed before cart fails.
    slow = [{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"setWeight": 50},
            {"pause": {"duration": "1m"}}]  # fmt: skip
    for app in ("inventory", "billing"):
        env.apply(NAMESPACE, scenario.rollout(app, steps=quick, analysis=gates(app)))
    # Each member returns to legacy by its own rollback spec: orders ramps down over 10s.
    graceful = {"mode": "graceful", "duration": "10s"}
    env.apply(
        NAMESPACE,
        scenario.rollout("orders", steps=quick, analysis=gates("orders"), rollback=graceful),
        scenario.rollout("cart", steps=slow, analysis=gates("cart")),
    )
    print("  members applied; each waits for its wave (reason WaitingForMigration)")
    print(indented(segue_cli(env, "get", "migration", MIGRATION, "-n", NAMESPACE)))

    injected = False
    shown_during = False

    def watch(obj: dict[str, Any]) -> None:
        nonlocal injected, shown_during
        st = obj.get("status") or {}
        phases = {m["name"]: m for w in st.get("waves", []) for m in w.get("members", [])}
        orders, cart = phases.get("orders", {}), phases.get("cart", {})
        if (
            not injected
            and orders.get("phase") == "Succeeded"
            and cart.get("phase") == "Progressing"
            and cart.get("weight") == 50
        ):
            injected = True
            print("  !! orders Succeeded; injecting 20 % errors into cart v2 (at 50 %)", flush=True)
            sims["cart"].set("new", errorRate=0.2)
        if not shown_during and st.get("phase") == "RollingBack" and orders.get("weight"):
            shown_during = True
            now = datetime.now(UTC)
            print(f"\n  $ kubectl segue get migration {MIGRATION} -n {NAMESPACE}   # during")
            view = MigrationView.from_object(obj)
            print(indented("\n".join(migration_frame(view, now, CLI_WIDTH))) + "\n", flush=True)

    follow_migration(env, {"RolledBack", "Failed", "Succeeded"}, timeout=300, on_change=watch)
    print(f"\n  $ kubectl segue get migration {MIGRATION} -n {NAMESPACE}   # after")
    print(indented(segue_cli(env, "get", "migration", MIGRATION, "-n", NAMESPACE)))
    print(f"\n  $ kubectl segue history migration {MIGRATION} -n {NAMESPACE}")
    print(indented(segue_cli(env, "history", "migration", MIGRATION, "-n", NAMESPACE)))
    for app in ("orders", "cart"):
        weight = scenario.route_weight(env, NAMESPACE, app)
        print(f"  HTTPRoute {app} now sends {weight}% to v2")
    # By uid: Events of an earlier run's Migration of the same name may still be there.
    uid = env.get_json(NAMESPACE, "migration.segue.dev", MIGRATION)["metadata"]["uid"]
    events = env.kubectl(
        "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.uid={uid}",
        "--sort-by=.metadata.creationTimestamp", "-o",
        "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
    )  # fmt: skip
    print(f"  Events of migration {MIGRATION}:")
    print("  " + "\n  ".join(e[:150] for e in events.splitlines()[-8:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave operator and simulators up")
    args = parser.parse_args()

    say("Local cluster and Prometheus (the first run builds the control plane; see README)")
    env = scenario.start_cluster()
    scenario.ensure_namespace(env, NAMESPACE)
    logs = Path(env.info["logs"])
    say(
        f"Admission policies bound to namespace {NAMESPACE}: approving needs verb approve "
        "(ClusterRole segue-approver); the API server stamps who steered a Rollout"
    )
    install_admission(env)

    say(f"The Segue operator (log: {logs / 'operator.log'})")
    # As the chart runs it: writing only to objects labelled segue.dev/managed=true (the
    # scenario's Deployments and HTTPRoutes carry it).
    operator = scenario.start_operator(
        env.kubeconfig,
        logs / "operator.log",
        [NAMESPACE],
        prometheus=env.prometheus,
        extra_args=["--require-managed-label"],
    )
    apps = ("checkout", "payments", "search")
    sims: dict[str, scenario.Sim] = {}
    try:
        if env.kubectl("get", "-n", NAMESPACE, "migrations.segue.dev", "-o", "name").strip():
            say("Removing the Migration of an earlier run")
            env.kubectl("delete", "-n", NAMESPACE, "migrations.segue.dev", "--all")
        if env.kubectl("get", "-n", NAMESPACE, "rollouts.segue.dev", "-o", "name").strip():
            say("Removing the Rollouts of an earlier run")
            env.kubectl("delete", "-n", NAMESPACE, "rollouts.segue.dev", "--all", "--timeout=120s")

        say(
            f"Legacy and new Deployments, Services and HTTPRoutes in namespace {NAMESPACE}, "
            "the Deployments and HTTPRoutes labelled segue.dev/managed=true"
        )
        for app in apps:
            scenario.service_pair(env, NAMESPACE, app)
        table = env.kubectl("get", "-n", NAMESPACE, "deployments,httproutes")
        print("  " + table.replace("\n", "\n  "))

        say("Traffic simulators (200 req/s each, split by the live HTTPRoute weights)")
        for app in apps:
            sims[app] = scenario.start_sim(env, NAMESPACE, app, logs)
            print(f"  {app}: metrics on http://{sims[app].host_port}/metrics, scraped every 1s")

        say("1/4 checkout: low-risk preset (10 → 25 → 50 → 75 → 100 %), holds of 3s, gated")
        env.apply(
            NAMESPACE,
            scenario.rollout("checkout", risk="low", hold="3s", analysis=gates("checkout")),
        )
        done = follow(env, "checkout", {"Succeeded", "RolledBack", "Failed"})
        history(done, last=4)

        say("2/4 payments: 20 % errors appear in the new version at 25 % of traffic")
        steps = [{"setWeight": 10}, {"pause": {"duration": "4s"}}, {"setWeight": 25},
                 {"pause": {"duration": "1m"}}, {"setWeight": 50}]  # fmt: skip
        env.apply(NAMESPACE, scenario.rollout("payments", steps=steps, analysis=gates("payments")))
        injected = False

        def inject(status: dict[str, Any]) -> None:
            nonlocal injected
            if not injected and status.get("weight") == 25:
                injected = True
                print("  !! injecting 20 % errors into payments v2", flush=True)
                sims["payments"].set("new", errorRate=0.2)

        done = follow(env, "payments", {"Succeeded", "RolledBack", "Failed"}, on_weight=inject)
        history(done, last=4)
        weight = scenario.route_weight(env, NAMESPACE, "payments")
        print(f"  HTTPRoute payments now sends {weight}% to v2")

        say("3/4 search: only an approver approves; a person aborts at 30 %")
        steps = [{"setWeight": 30}, {"approval": {}}, {"setWeight": 100}]
        env.apply(NAMESPACE, scenario.rollout("search", steps=steps, analysis=gates("search")))
        follow(env, "search", {"AwaitingApproval"})
        print("  $ kubectl annotate rollout search segue.dev/approve=1 --as=dev  # dev: no approve")
        answer = refused(env, "annotate", "-n", NAMESPACE, "rollout.segue.dev/search",
                         "segue.dev/approve=1", "--as=dev")  # fmt: skip
        print("  " + (answer.split("denied request: ")[-1] if answer else "!! accepted"))
        print(
            '  $ kubectl annotate rollout search segue.dev/abort="latency complaints from support"'
        )
        env.kubectl("annotate", "-n", NAMESPACE, "rollout.segue.dev/search",
                    "segue.dev/abort=latency complaints from support")  # fmt: skip
        done = follow(env, "search", {"RolledBack", "Failed"})
        history(done, last=3)
        print(
            f"  HTTPRoute search now sends {scenario.route_weight(env, NAMESPACE, 'search')}% to v2"
        )

        for app in apps:  # their Rollouts are settled: the machine's cores go to the next part
            sims.pop(app).stop()
        migration_scenario(env, sims, logs)

        say("Where things stand")
        print(
            "  " + env.kubectl("get", "-n", NAMESPACE, "rollouts.segue.dev").replace("\n", "\n  ")
        )
        events = env.kubectl(
            "get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.name=payments",
            "--sort-by=.metadata.creationTimestamp", "-o",
            "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
        )  # fmt: skip
        print("  Events of payments:\n  " + "\n  ".join(e[:150] for e in events.splitlines()[-6:]))
    finally:
        if not args.keep:
            operator.stop()
            for sim in sims.values():
                sim.stop()
    print(
        f"\nExplore:\n  export KUBECONFIG={env.kubeconfig}\n"
        f"  kubectl-segue get -n {NAMESPACE}            # or: .venv/bin/kubectl-segue\n"
        f"  kubectl-segue history payments -n {NAMESPACE}\n"
        f"  kubectl-segue get migration {MIGRATION} -n {NAMESPACE} --watch\n"
        f"  kubectl describe rollout.segue.dev payments -n {NAMESPACE}\n"
        "Stop the cluster: make cluster-down",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
