"""Approval is a permission with a name on it: the chart's admission policies on the real
API server, with impersonated users (kubectl --as) and ServiceAccount tokens.

Each test installs the shipped policies under names of its own, bound to its namespace
only (matchResources.namespaceSelector), and deletes them afterwards, so tests running at
the same time elsewhere on the cluster are untouched. The rendering tests need only helm.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from segue import GROUP, PLURAL, VERSION
from segue_testkit import cluster
from tests.e2e.conftest import Kube
from tests.e2e.support import Rollouts, apply, shop_pair, start_operator, wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "segue"
CLI = Path(sys.executable).parent / "kubectl-segue"
Doc = dict[str, Any]
POLICY_KINDS = {
    "ClusterRole",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
}
PLAN = [{"setWeight": 10}, {"approval": {}}, {"setWeight": 100}]


@pytest.fixture(scope="module")
def helm() -> Path:
    return cluster.build() / "helm"


def render(helm: Path, values: Doc | None = None, *, show: str | None = None) -> list[Doc]:
    args = [str(helm), "template", "segue", str(CHART), "--namespace", "segue-system"]
    if values is not None:
        args += ["--values", "-"]
    if show is not None:
        args += ["--show-only", show]
    result = subprocess.run(
        args, input=json.dumps(values or {}), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


# --- rendering -------------------------------------------------------------------------------


def test_the_plain_manifest_is_the_chart_s_default_rendering(helm: Path) -> None:
    shipped = [d for d in yaml.safe_load_all((ROOT / "deploy" / "admission.yaml").read_text())]
    rendered = render(helm, show="templates/admission.yaml")
    assert [d for d in shipped if d] == rendered, (
        "deploy/admission.yaml differs from the chart; regenerate it with: helm template segue "
        "charts/segue --namespace segue-system -s templates/admission.yaml"
    )
    assert {d["kind"] for d in rendered} == POLICY_KINDS


def test_values_choose_what_needs_approval_and_where(helm: Path) -> None:
    docs = render(
        helm,
        {
            "admission": {
                "requireApprove": ["approve", "abort"],
                "mutating": False,
                "approverRole": "team-approver",
            },
            "rbac": {"scope": "namespace"},
            "watchNamespaces": ["shop"],
        },
        show="templates/admission.yaml",
    )
    assert {d["kind"] for d in docs} == POLICY_KINDS - {
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    }
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    needs = next(v for v in policy["spec"]["variables"] if v["name"] == "needsApproval")
    assert "k in ['segue.dev/approve', 'segue.dev/abort']" in needs["expression"]
    assert "team-approver" in policy["spec"]["validations"][0]["messageExpression"]
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]}
        ]
    }
    off = subprocess.run(
        [str(helm), "template", "segue", str(CHART), "--set", "admission.enabled=false"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert off.returncode == 0 and "AdmissionPolicy" not in off.stdout


# --- on the API server -----------------------------------------------------------------------


class Policies:
    """The chart's admission policies under unique names, bound to one namespace."""

    def __init__(self, kube: Kube, helm: Path, namespace: str, mutating: bool) -> None:
        self.kube = kube
        self.suffix = uuid.uuid4().hex[:6]
        self.role = f"segue-approver-{self.suffix}"
        self.docs = render(
            helm,
            {
                "fullnameOverride": f"segue-{self.suffix}",
                "admission": {
                    "approverRole": self.role,
                    "mutating": mutating,
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace},
                    },
                },
            },
            show="templates/admission.yaml",
        )

    def install(self) -> None:
        self.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(self.docs))

    def remove(self) -> None:
        self.kube.kubectl(
            "delete", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(self.docs)
        )


@pytest.fixture
def install_policies(kube: Kube, helm: Path, namespace: str) -> Iterator[Callable[..., Policies]]:
    made: list[Policies] = []

    def install(mutating: bool = True) -> Policies:
        p = Policies(kube, helm, namespace, mutating)
        made.append(p)
        p.install()
        return p

    yield install
    for p in made:
        p.remove()


def grant(kube: Kube, namespace: str, policies: Policies) -> None:
    """bob and alice may edit Rollouts; alice may also approve (ClusterRole segue-approver)."""
    kube.kubectl(
        "create", "role", "rollout-editor", "-n", namespace,
        "--verb=get,list,watch,patch,update", "--resource=rollouts.segue.dev",
    )  # fmt: skip
    kube.kubectl(
        "create", "rolebinding", "editors", "-n", namespace, "--role=rollout-editor",
        "--user=bob", "--user=alice",
    )  # fmt: skip
    kube.kubectl(
        "create", "rolebinding", "approvers", "-n", namespace,
        f"--clusterrole={policies.role}", "--user=alice",
    )  # fmt: skip


def as_user(kube: Kube, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return kube.kubectl(*args, f"--as={user}", check=False)


def wait_enforced(kube: Kube, namespace: str, name: str) -> None:
    """A new policy takes a moment to be enforced: until bob's approval (dry run) is refused."""
    args = ["annotate", "rollout.segue.dev", name, "-n", namespace]
    args += ["segue.dev/approve=99", "--overwrite", "--dry-run=server"]
    wait_until(
        "the admission policy to be enforced",
        lambda: as_user(kube, "bob", *args).returncode,
        lambda rc: rc != 0,
        timeout=30,
    )


def rollout(name: str) -> Doc:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "legacy": {"deployment": "shop-v1"},
            "new": {"deployment": "shop-v2"},
            "traffic": {
                "gatewayAPI": {
                    "httpRoute": "shop",
                    "legacyBackend": "shop-v1",
                    "newBackend": "shop-v2",
                }
            },
            "steps": PLAN,
        },
    }


@pytest.fixture
def operator_kubeconfig(kube: Kube, helm: Path, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """A ServiceAccount with exactly the chart's namespaced operator permissions (its Role
    in the namespace, and the cluster-wide read of MetricProviders every install has), and
    a kubeconfig that authenticates as it (a bound token)."""
    docs = render(helm, {"rbac": {"scope": "namespace"}, "watchNamespaces": [namespace]})
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == namespace]
    (providers,) = [
        d
        for d in docs
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-metricproviders")
    ]
    kube.kubectl("create", "serviceaccount", "segue-op", "-n", namespace)
    manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "segue-op", "namespace": namespace},
        "rules": role["rules"],
    }
    apply(kube, namespace, manifest)
    kube.kubectl(
        "create", "rolebinding", "segue-op", "-n", namespace, "--role=segue-op",
        f"--serviceaccount={namespace}:segue-op",
    )  # fmt: skip
    cluster_role = f"segue-op-{namespace}"  # cluster-scoped: unique, and removed below
    cluster_grant = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_role},
            "rules": providers["rules"],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "segue-op", "namespace": namespace}],
        },
    ]
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(cluster_grant))
    try:
        yield token_kubeconfig(kube, namespace, "segue-op", tmp_path / "op.kubeconfig")
    finally:
        kube.kubectl(
            "delete", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(cluster_grant)
        )


def token_kubeconfig(kube: Kube, namespace: str, sa: str, path: Path) -> Path:
    token = kube.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    view = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    server = dict(view["clusters"][0]["cluster"])
    if "certificate-authority" in server:
        ca = Path(server.pop("certificate-authority")).read_bytes()
        server["certificate-authority-data"] = base64.b64encode(ca).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [
            {"name": "c", "context": {"cluster": "c", "user": sa, "namespace": namespace}}
        ],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_only_an_approver_approves_and_history_names_them(
    kube: Kube,
    crds: None,
    namespace: str,
    helm: Path,
    install_policies: Callable[..., Policies],
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    policies = install_policies()
    grant(kube, namespace, policies)
    rollouts = shop_pair(kube, namespace)
    op = start_operator(
        str(operator_kubeconfig),
        tmp_path / "operator.log",
        [namespace],
        # The routers the chart's default RBAC (rendered above) grants.
        extra_args=["--no-leader-election", "--routers=gatewayAPI,replicas"],
    )
    try:
        apply(kube, namespace, rollout("web"))
        wait_until(
            "AwaitingApproval", lambda: rollouts.phase("web"), lambda p: p == "AwaitingApproval"
        )
        wait_enforced(kube, namespace, "web")
        target = ("rollout.segue.dev", "web", "-n", namespace)

        # A plain editor: approve, promote and a plan edit are refused, naming the permission.
        for args, what in (
            (("annotate", *target, "segue.dev/approve=1"), "set segue.dev/approve"),
            (("annotate", *target, "segue.dev/promote=now"), "set segue.dev/promote"),
            (
                ("patch", *target, "--type=merge", "-p", '{"spec":{"steps":[{"setWeight":100}]}}'),
                "edit the plan (spec.steps, risk, hold, analysis) once traffic has moved",
            ),
        ):
            r = as_user(kube, "bob", *args)
            assert r.returncode != 0, r.stdout
            assert f'user "bob" may not {what} (rollouts.segue.dev "web"' in r.stderr, r.stderr
            assert 'needs permission "approve" on rollouts.segue.dev' in r.stderr
            assert f"binding ClusterRole {policies.role}" in r.stderr
        # Nor can bob sign for alice.
        r = as_user(kube, "bob", "annotate", *target, "segue.dev/approved-by=alice")
        assert r.returncode != 0 and 'must name the requesting user "bob"' in r.stderr
        assert rollouts.phase("web") == "AwaitingApproval"
        assert rollouts.new_weight("shop") == 10

        # The approver edits the plan (recorded with her name) and approves.
        steps = [{"setWeight": 10}, {"approval": {}}, {"setWeight": 50}, {"setWeight": 100}]
        r = as_user(kube, "alice", "patch", *target, "--type=merge", "-p",
                    json.dumps({"spec": {"steps": steps}}))  # fmt: skip
        assert r.returncode == 0, r.stderr
        wait_until(
            "PlanChanged in history",
            lambda: [
                h for h in rollouts.status("web").get("history", []) if h["event"] == "PlanChanged"
            ],
            bool,
        )
        r = as_user(kube, "alice", "annotate", *target, "segue.dev/approve=1")
        assert r.returncode == 0, r.stderr
        wait_until(
            "Succeeded", lambda: rollouts.phase("web"), lambda p: p == "Succeeded", timeout=60
        )

        history = rollouts.status("web")["history"]
        by_event = {h["event"]: h for h in history}
        assert by_event["PlanChanged"]["actor"] == "alice"
        assert by_event["PlanChanged"]["reason"].startswith("plan changed by alice at step 1 (10%)")
        assert by_event["Approved"]["actor"] == "alice"
        assert by_event["Approved"]["reason"] == "step 1 approved by alice"
        assert ("Normal", "Approved", "step 1 approved by alice") in rollouts.events("web")
        # The operator removed the approval and its companion: removing is never refused.
        wait_until(
            "the approval annotations removed",
            lambda: rollouts.get("web")["metadata"].get("annotations") or {},
            lambda a: "segue.dev/approve" not in a and "segue.dev/approved-by" not in a,
        )
        log = op.log()
        assert "denied request" not in log and "forbidden" not in log.lower(), log[-4000:]
    finally:
        op.stop()
        print(f"--- operator log ---\n{op.log()[-6000:]}")


def test_without_the_mutating_policy_kubectl_segue_signs_and_forgery_is_refused(
    kube: Kube,
    crds: None,
    namespace: str,
    helm: Path,
    install_policies: Callable[..., Policies],
    tmp_path: Path,
) -> None:
    policies = install_policies(mutating=False)
    rollouts = Rollouts(kube.api_client, namespace)
    apply(kube, namespace, rollout("web"))
    status = {"phase": "AwaitingApproval", "step": 1, "totalSteps": 3, "weight": 10,
              "targetWeight": 10}  # fmt: skip
    kube.kubectl(
        "patch", "rollout.segue.dev", "web", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip
    for sa in ("carol", "dan"):
        kube.kubectl("create", "serviceaccount", sa, "-n", namespace)
    kube.kubectl(
        "create", "role", "rollout-editor", "-n", namespace,
        "--verb=get,list,watch,patch", "--resource=rollouts.segue.dev",
    )  # fmt: skip
    kube.kubectl(
        "create", "rolebinding", "editors", "-n", namespace, "--role=rollout-editor",
        f"--serviceaccount={namespace}:carol", f"--serviceaccount={namespace}:dan",
    )  # fmt: skip
    kube.kubectl(
        "create", "rolebinding", "approvers", "-n", namespace,
        f"--clusterrole={policies.role}", f"--serviceaccount={namespace}:carol",
        "--user=alice",
    )  # fmt: skip
    wait_enforced(kube, namespace, "web")

    def segue(sa: str, *args: str) -> subprocess.CompletedProcess[str]:
        config = token_kubeconfig(kube, namespace, sa, tmp_path / f"{sa}.kubeconfig")
        return subprocess.run(
            [str(CLI), "--kubeconfig", str(config), *args, "-n", namespace],
            capture_output=True,
            text=True,
            timeout=60,
        )

    dan = f"system:serviceaccount:{namespace}:dan"
    r = segue("dan", "approve", "web")
    assert r.returncode == 1, r.stdout
    assert r.stderr.startswith(
        f"error: rollout {namespace}/web: refused by the API server: "
        f'user "{dan}" may not set segue.dev/approve (rollouts.segue.dev "web"'
    ), r.stderr
    assert "Traceback" not in r.stderr

    # Without the mutating policy nobody writes the companion for alice: refused.
    r = as_user(kube, "alice", "annotate", "rollout.segue.dev", "web", "-n", namespace,
                "segue.dev/approve=1")  # fmt: skip
    assert r.returncode != 0
    assert 'segue.dev/approved-by must name the requesting user "alice"' in r.stderr
    r = as_user(kube, "alice", "annotate", "rollout.segue.dev", "web", "-n", namespace,
                "segue.dev/approve=1", "segue.dev/approved-by=carol")  # fmt: skip
    assert r.returncode != 0 and "must name the requesting user" in r.stderr

    carol = f"system:serviceaccount:{namespace}:carol"
    r = segue("carol", "approve", "web")
    assert r.returncode == 0, r.stderr
    annotations = rollouts.get("web")["metadata"]["annotations"]
    assert annotations["segue.dev/approve"] == "1"
    assert annotations["segue.dev/approved-by"] == carol
    # What the operator does once it handled them: never refused, even to a plain editor.
    kube.kubectl(
        "annotate", "rollout.segue.dev", "web", "-n", namespace, "segue.dev/approve-",
        "segue.dev/approved-by-", f"--as={dan}",
    )  # fmt: skip
    # abort needs no approve permission by default (it only ever pulls traffic back).
    r = segue("dan", "abort", "web", "--reason", "p99")
    assert r.returncode == 0, r.stderr
    annotations = rollouts.get("web")["metadata"]["annotations"]
    assert annotations["segue.dev/aborted-by"] == dan
    client.CustomObjectsApi(kube.api_client).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "web"
    )


def migration(name: str) -> Doc:
    """Two waves; the second waits for segue.dev/approve=1."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Migration",
        "metadata": {"name": name},
        "spec": {
            "rollbackScope": "wave",
            "waves": [
                {"name": "low", "rollouts": ["catalog"]},
                {"name": "medium", "rollouts": ["cart"], "approval": True},
            ],
        },
    }


def test_only_an_approver_starts_a_migration_wave(
    kube: Kube,
    crds: None,
    namespace: str,
    helm: Path,
    install_policies: Callable[..., Policies],
    tmp_path: Path,
) -> None:
    """No operator: the status a Migration controller writes while wave 1 waits for a
    person is written directly (the status subresource is not matched by the policies)."""
    policies = install_policies()
    apply(kube, namespace, rollout("web"), migration("shop-v2"))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "phase": "AwaitingApproval",
        "wave": 0,
        "message": "wave 1 (medium) waits for segue.dev/approve=1",
        "waves": [
            {"name": "low", "phase": "Succeeded", "startedAt": now, "succeededAt": now,
             "members": [{"name": "catalog", "phase": "Succeeded", "weight": 100}]},
            {"name": "medium", "phase": "Pending",
             "members": [{"name": "cart", "phase": "Waiting", "weight": 0}]},
        ],
    }  # fmt: skip
    kube.kubectl(
        "patch", "migration.segue.dev", "shop-v2", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip
    for sa in ("carol", "dan"):
        kube.kubectl("create", "serviceaccount", sa, "-n", namespace)
    kube.kubectl(
        "create", "role", "segue-editor", "-n", namespace, "--verb=get,list,watch,patch",
        "--resource=rollouts.segue.dev", "--resource=migrations.segue.dev",
    )  # fmt: skip
    kube.kubectl(
        "create", "rolebinding", "editors", "-n", namespace, "--role=segue-editor",
        f"--serviceaccount={namespace}:carol", f"--serviceaccount={namespace}:dan",
    )  # fmt: skip
    kube.kubectl(
        "create", "rolebinding", "approvers", "-n", namespace,
        f"--clusterrole={policies.role}", f"--serviceaccount={namespace}:carol",
    )  # fmt: skip
    dan = f"system:serviceaccount:{namespace}:dan"
    dry_run = ["annotate", "migration.segue.dev", "shop-v2", "-n", namespace, "--overwrite",
               "segue.dev/approve=99", "--dry-run=server"]  # fmt: skip
    wait_until(
        "the admission policy to be enforced on Migrations",
        lambda: as_user(kube, dan, *dry_run).returncode,
        lambda rc: rc != 0,
        timeout=30,
    )

    def segue(sa: str, *args: str) -> subprocess.CompletedProcess[str]:
        config = token_kubeconfig(kube, namespace, sa, tmp_path / f"{sa}.kubeconfig")
        return subprocess.run(
            [str(CLI), "--kubeconfig", str(config), *args, "-n", namespace],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def annotations() -> dict[str, str]:
        obj = client.CustomObjectsApi(kube.api_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "migrations", "shop-v2"
        )
        assert isinstance(obj, dict)
        return dict(obj["metadata"].get("annotations") or {})

    # A plain editor of Migrations: the approval is refused, naming the permission.
    r = segue("dan", "approve", "migration", "shop-v2", "--wave", "1")
    assert r.returncode == 1, r.stdout
    assert r.stderr.strip() == (
        f"error: migration {namespace}/shop-v2: refused by the API server: "
        f'user "{dan}" may not set segue.dev/approve (migrations.segue.dev "shop-v2" in '
        f'namespace "{namespace}"): that needs permission "approve" on migrations.segue.dev; '
        f"grant it by binding ClusterRole {policies.role}, e.g. kubectl create rolebinding "
        f"segue-approvers --clusterrole={policies.role} --user={dan} -n {namespace}"
    ), r.stderr
    r = kube.kubectl(
        "annotate", "migration.segue.dev", "shop-v2", "-n", namespace, "segue.dev/approve=1",
        f"--as={dan}", check=False,
    )  # fmt: skip
    assert r.returncode != 0 and 'needs permission "approve" on migrations.segue.dev' in r.stderr
    assert "segue.dev/approve" not in annotations()
    # Editing the waves is not a Rollout's plan edit: an editor may.
    r = kube.kubectl(
        "patch", "migration.segue.dev", "shop-v2", "-n", namespace, "--type=merge", "-p",
        json.dumps({"spec": {"rollbackScope": "migration"}}), f"--as={dan}", check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr

    # The approver: accepted, and the API server stamps who approved.
    carol = f"system:serviceaccount:{namespace}:carol"
    r = segue("carol", "approve", "migration", "shop-v2", "--wave", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (
        f"migration {namespace}/shop-v2: approved wave 1 (medium); it starts at the "
        "operator's next pass"
    )
    assert annotations()["segue.dev/approve"] == "1"
    assert annotations()["segue.dev/approved-by"] == carol
    # Nobody signs for somebody else.
    r = kube.kubectl(
        "annotate", "migration.segue.dev", "shop-v2", "-n", namespace, "--overwrite",
        "segue.dev/approved-by=carol", f"--as={dan}", check=False,
    )  # fmt: skip
    assert r.returncode != 0 and f'must name the requesting user "{dan}"' in r.stderr


def test_a_router_the_operator_may_not_watch_fails_its_rollouts_and_holds_no_other(
    kube: Kube, crds: None, namespace: str, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    """Every router enabled, under the chart's default RBAC (Gateway API and replicas only):
    the start-up check finds the others may not be listed, so they are not run; a Rollout
    naming one is Failed with the reason, and a Gateway API Rollout beside it progresses
    (before the check, kopf waited forever for the forbidden listings and handled none)."""
    rollouts = shop_pair(kube, namespace)
    op = start_operator(
        str(operator_kubeconfig), tmp_path / "operator.log", [namespace],
        extra_args=["--no-leader-election"],  # no --routers: the kit enables every router
    )  # fmt: skip
    try:
        nginx = rollout("edge")
        nginx["spec"]["traffic"] = {
            "nginx": {"ingress": "shop", "legacyService": "shop-v1", "newService": "shop-v2"}
        }
        apply(kube, namespace, rollout("web"), nginx)
        status = wait_until(
            "the nginx Rollout Failed",
            lambda: rollouts.status("edge"),
            lambda s: s.get("phase") == "Failed",
        )
        assert "spec.traffic.nginx: the nginx router cannot run in this operator" in (
            status.get("message") or ""
        )
        assert "may not list ingresses" in (status.get("message") or "")
        wait_until(
            "the Gateway API Rollout moves",
            lambda: rollouts.phase("web"),
            lambda p: p == "AwaitingApproval",
        )
    finally:
        op.stop()
    assert "router nginx cannot run" in (tmp_path / "operator.log").read_text()


def test_rollouts_are_created_with_the_operator_s_finalizer(
    kube: Kube, crds: None, namespace: str, helm: Path, install_policies: Callable[..., Policies]
) -> None:
    """The mutating policy puts segue.dev/finalizer on a Rollout as it is created, so the
    operator never spends a write (and a round trip before the first weight) adding it;
    finalizers the Rollout already has are kept."""

    def created(name: str, finalizers: list[str] | None = None, dry_run: bool = False) -> Doc:
        doc = rollout(name)
        if finalizers is not None:
            doc["metadata"]["finalizers"] = finalizers
        args = ["create", "-n", namespace, "-o", "json", "-f", "-"]
        out = kube.kubectl(*args, *(["--dry-run=server"] if dry_run else []), input=json.dumps(doc))
        return dict(json.loads(out.stdout))

    # Without the policies the Rollout has no finalizer until an operator adds one.
    assert "finalizers" not in created("before", dry_run=True)["metadata"]
    install_policies()
    wait_until(
        "the finalizer policy to be enforced",
        lambda: created("probe", dry_run=True)["metadata"].get("finalizers"),
        lambda f: f == ["segue.dev/finalizer"],
        timeout=30,
    )
    assert created("web")["metadata"]["finalizers"] == ["segue.dev/finalizer"]
    kept = created("kept", finalizers=["example.com/keep"])
    assert kept["metadata"]["finalizers"] == ["example.com/keep", "segue.dev/finalizer"]
    again = created("again", finalizers=["segue.dev/finalizer"])
    assert again["metadata"]["finalizers"] == ["segue.dev/finalizer"]
    # Nothing runs to release them here: drop them so the namespace can go.
    for name in ("web", "kept", "again"):
        kube.kubectl(
            "patch", "rollout.segue.dev", name, "-n", namespace, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}',
        )  # fmt: skip
