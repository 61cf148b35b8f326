"""The Helm chart (charts/segue): what it renders, what it installs, and proof that the real
operator does its job under exactly the permissions the chart grants.

The rendering tests need only the helm binary built with the control plane (cluster.build());
the install tests and the operator run need the local cluster.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from segue import GROUP, PLURAL, VERSION
from segue.controller.shards import Shard, lease_names
from segue_testkit import cluster
from tests.e2e.conftest import Kube
from tests.e2e.support import (
    Rollouts,
    apply,
    deployment,
    httproute,
    start_operator,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "segue"
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
Doc = dict[str, Any]
Grant = tuple[str, str, str, tuple[str, ...]]  # (apiGroup, resource, verb, resourceNames)

# What the operator does through the API, per namespace it handles (see templates/rbac.yaml).
NAMESPACED_GRANTS: frozenset[Grant] = frozenset(
    {(GROUP, "rollouts", v, ()) for v in ("get", "list", "watch", "patch")}
    | {(GROUP, "rollouts/status", "patch", ())}
    | {(GROUP, "migrations", v, ()) for v in ("get", "list", "watch", "patch")}
    | {(GROUP, "migrations/status", "patch", ())}
    | {("", "events", "create", ())}
    | {("apps", "deployments", v, ()) for v in ("get", "list", "watch", "patch")}
    | {("apps", "deployments/scale", "patch", ())}
    | {("gateway.networking.k8s.io", "httproutes", v, ()) for v in ("list", "watch", "patch")}
)
READ_VERBS = {"get", "list", "watch"}
# Leader election, in the release namespace whatever the scope (templates/leader-election.yaml):
# create a Lease, list them (the resize check of shards), then read and renew only the names
# an install may use: the plain one and one per possible shard, whatever `shards` is.
LEASE = "segue-operator"


def lease_grants(lease: str) -> frozenset[Grant]:
    names = tuple(sorted(lease_names(lease)))
    return frozenset(
        {("coordination.k8s.io", "leases", v, ()) for v in ("create", "list")}
        | {("coordination.k8s.io", "leases", v, names) for v in ("get", "update")}
    )


LEASE_GRANTS = lease_grants(LEASE)
LEADER_ELECTION_SUFFIX = "-leader-election"


# --- rendering ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm as built into the binary cache with the control plane (built if missing)."""
    return cluster.build() / "helm"


def run_helm(helm: Path, *args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args, str(chart)], capture_output=True, text=True, timeout=120, check=False
    )


def render(
    helm: Path, *sets: str, chart: Path = CHART, namespace: str = "segue-system"
) -> list[Doc]:
    """`helm template` with `--set` for each of `sets`; the rendered objects."""
    args = ["template", "segue", "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    result = run_helm(helm, *args, chart=chart)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str) -> Doc:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def grants(rules: list[Doc]) -> set[Grant]:
    """Every (apiGroup, resource, verb, resourceNames) a list of PolicyRules allows."""
    out: set[Grant] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule, rule
        names = tuple(sorted(rule.get("resourceNames") or ()))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb, names))
    return out


def assert_least_privilege(rules: list[Doc]) -> None:
    """Nothing the operator does not use: no wildcard, no write but patch and posting Events,
    no Secret access except get by name."""
    for group, resource, verb, names in grants(rules):
        assert "*" not in (group, resource, verb), (group, resource, verb)
        assert verb in READ_VERBS | {"patch", "create"}, (group, resource, verb)
        if verb == "create":
            assert (group, resource) == ("", "events"), f"create on {group}/{resource}"
        if resource == "secrets":
            assert group == "" and verb == "get" and names, "Secrets only by name, get only"


def secret_grants(names: list[str]) -> set[Grant]:
    return {("", "secrets", "get", tuple(sorted(names)))} if names else set()


def is_leader_election(doc: Doc) -> bool:
    return doc["kind"] in ("Role", "RoleBinding") and doc["metadata"]["name"].endswith(
        LEADER_ELECTION_SUFFIX
    )


def is_admission(doc: Doc) -> bool:
    """The admission policies and the approver ClusterRole (tests/e2e/test_admission.py)."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    return "AdmissionPolicy" in kind or (kind == "ClusterRole" and name == "segue-approver")


def is_metric_provider_access(doc: Doc) -> bool:
    name = str(doc["metadata"]["name"])
    return name.endswith(("-metricproviders", "-metricprovider-secrets"))


def without_leader_election(docs: list[Doc]) -> list[Doc]:
    """The rendered objects except the leader-election Role and RoleBinding and the
    admission policies and the MetricProvider access (each tested apart): what the operator
    itself runs with."""
    return [
        d
        for d in docs
        if not is_leader_election(d) and not is_admission(d) and not is_metric_provider_access(d)
    ]


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_metric_providers_are_read_cluster_wide_and_their_secrets_only_by_name(
    helm: Path, scope: str
) -> None:
    docs = [d for d in render(helm, f"rbac.scope={scope}") if is_metric_provider_access(d)]
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "ClusterRoleBinding"]
    role = one(docs, "ClusterRole")
    assert grants(role["rules"]) == {
        ("segue.dev", "metricproviders", "list", ()),
        ("segue.dev", "metricproviders", "watch", ()),
    }
    sets = [
        f"rbac.scope={scope}",
        "metricProviders.secretNames={prom-token}",
        "metricProviders.secretNamespace=monitoring",
    ]
    docs = [d for d in render(helm, *sets) if is_metric_provider_access(d)]
    secrets = one(docs, "Role")
    assert secrets["metadata"]["namespace"] == "monitoring"
    assert grants(secrets["rules"]) == secret_grants(["prom-token"])
    assert_least_privilege(secrets["rules"])
    assert one(docs, "RoleBinding")["metadata"]["namespace"] == "monitoring"


def test_allowed_prometheus_addresses_reach_the_deployment(helm: Path) -> None:
    docs = render(helm, "allowedPrometheusAddresses={http://a:9090,https://b:9091}")
    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env["SEGUE_ALLOW_PROMETHEUS_ADDRESSES"] == "http://a:9090,https://b:9091"
    assert "SEGUE_ALLOW_PROMETHEUS_ADDRESSES" not in {
        e["name"] for e in container(render(helm))["env"]
    }


def container(docs: list[Doc]) -> Doc:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    c: Doc = pod["containers"][0]
    return c


def test_chart_lints_clean(helm: Path) -> None:
    for sets in (
        [],
        ["rbac.scope=namespace", "watchNamespaces={shop,payments}", "secretNames={prom}"],
        ["serviceMonitor.enabled=true", "grafanaDashboard.enabled=true", "logLevel=debug"],
    ):
        args = ["lint", "--strict"] + [a for s in sets for a in ("--set", s)]
        result = run_helm(helm, *args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_chart_metadata(helm: Path) -> None:
    assert CHART_META["apiVersion"] == "v2"
    assert CHART_META["appVersion"] == "0.1.0"
    crds = run_helm(helm, "show", "crds")
    assert crds.returncode == 0, crds.stderr
    assert (ROOT / "crds" / "rollouts.segue.dev.yaml").read_text() in crds.stdout


def test_cluster_scope_grants_exactly_what_the_operator_uses(helm: Path) -> None:
    docs = without_leader_election(render(helm))
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    }
    role = one(docs, "ClusterRole")
    assert grants(role["rules"]) == NAMESPACED_GRANTS
    assert_least_privilege(role["rules"])
    # Nothing follows namespaces or CRDs: kopf's scanning is off, the informers watch.
    assert not any(
        g[1] in ("namespaces", "customresourcedefinitions") for g in grants(role["rules"])
    )

    binding = one(docs, "ClusterRoleBinding")
    sa = one(docs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "segue-system"}
    ]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert not [a for a in container(docs)["args"] if a.startswith("--namespace")]


def test_namespace_scope_has_a_role_per_watched_namespace_and_nothing_cluster_wide(
    helm: Path,
) -> None:
    docs = without_leader_election(
        render(helm, "rbac.scope=namespace", "watchNamespaces={shop,payments}")
    )
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = by_kind(docs, "Role")
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["payments", "shop"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["payments", "shop"]
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    for role in roles:
        assert grants(role["rules"]) == NAMESPACED_GRANTS
        assert_least_privilege(role["rules"])
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": sa, "namespace": "segue-system"}
        ]
    args = container(docs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=shop",
        "--namespace=payments",
    ]


def test_namespace_scope_defaults_to_the_release_namespace(helm: Path) -> None:
    docs = without_leader_election(render(helm, "rbac.scope=namespace", namespace="team-a"))
    assert [r["metadata"]["namespace"] for r in by_kind(docs, "Role")] == ["team-a"]
    assert [b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")] == ["team-a"]
    assert "--namespace=team-a" in container(docs)["args"]


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_secrets_only_by_name_and_none_by_default(helm: Path, scope: str) -> None:
    kinds = {"cluster": "ClusterRole", "namespace": "Role"}
    for names in ([], ["prom-creds"], ["prom-creds", "slack-webhook"]):
        sets = [f"rbac.scope={scope}"]
        if names:
            sets.append("secretNames={" + ",".join(names) + "}")
        for role in by_kind(without_leader_election(render(helm, *sets)), kinds[scope]):
            secrets = {g for g in grants(role["rules"]) if g[1] == "secrets"}
            assert secrets == secret_grants(names)
            assert_least_privilege(role["rules"])


def test_every_rule_in_the_template_says_why_it_is_needed() -> None:
    for template in ("rbac.yaml", "leader-election.yaml", "admission.yaml"):
        lines = (CHART / "templates" / template).read_text().splitlines()
        for i, line in enumerate(lines):
            if line.lstrip().startswith("- apiGroups:"):
                assert lines[i - 1].lstrip().startswith("#"), f"rule without a comment: {line!r}"


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_leader_election_role_in_the_release_namespace_for_both_scopes(
    helm: Path, scope: str
) -> None:
    sets = [f"rbac.scope={scope}"]
    if scope == "namespace":
        sets.append("watchNamespaces={shop}")
    docs = render(helm, *sets)
    elected = [d for d in docs if is_leader_election(d)]
    assert sorted(d["kind"] for d in elected) == ["Role", "RoleBinding"]
    role, binding = one(elected, "Role"), one(elected, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "segue-system"
    assert grants(role["rules"]) == LEASE_GRANTS  # no watch or delete; update by name
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa, "namespace": "segue-system"}
    ]
    # The operator looks for the Lease where the Role allows it: the pod's own namespace.
    c = container(docs)
    assert "--leader-election" in c["args"]
    assert "--leader-election-namespace=$(POD_NAMESPACE)" in c["args"]
    assert f"--leader-election-name={LEASE}" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_replicas_and_lease_name_reach_the_deployment_and_the_role(helm: Path) -> None:
    docs = render(helm, "replicas=2", "leaderElection.leaseName=segue-blue")
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert "--leader-election-name=segue-blue" in container(docs)["args"]
    role = one([d for d in docs if is_leader_election(d)], "Role")
    assert grants(role["rules"]) == lease_grants("segue-blue")


def test_shards_render_a_deployment_per_shard_and_the_same_role(helm: Path) -> None:
    single = render(helm)
    assert [d["metadata"]["name"] for d in by_kind(single, "Deployment")] == ["segue"]
    assert not [a for a in container(single)["args"] if a.startswith("--shard")]

    docs = render(helm, "shards=3", "replicas=2")
    deployments = by_kind(docs, "Deployment")
    assert [d["metadata"]["name"] for d in deployments] == ["segue-0", "segue-1", "segue-2"]
    for i, d in enumerate(deployments):
        assert d["spec"]["replicas"] == 2  # standbys per shard
        # Each shard's pods, and only they, are its Deployment's.
        assert d["spec"]["selector"]["matchLabels"]["segue.dev/shard"] == str(i)
        assert d["spec"]["template"]["metadata"]["labels"]["segue.dev/shard"] == str(i)
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--shard={i}/3" in args
        assert f"--leader-election-name={LEASE}" in args
    # The Role is the same whatever `shards` is, so a resize never revokes a running pod's
    # own Lease; it covers every shard Lease.
    elected = [d for d in docs if is_leader_election(d)]
    assert grants(one(elected, "Role")["rules"]) == LEASE_GRANTS
    assert {Shard(i, 3).lease_name(LEASE) for i in range(3)} <= set(lease_names(LEASE))
    # The metrics Service selects every shard's pods.
    assert "segue.dev/shard" not in one(docs, "Service")["spec"]["selector"]


def test_deployment_is_hardened(helm: Path) -> None:
    docs = render(helm)
    deploy = one(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 1  # 2 for a warm standby; one leads (Lease)
    # Safe with leader election: the new pod stands by until the old one releases the Lease.
    assert deploy["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"].keys() == {"cpu", "memory"}
    assert c["resources"]["limits"].keys() == {"cpu", "memory"}

    assert c["image"] == f"ghcr.io/segue-dev/segue:{CHART_META['appVersion']}"
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert "--metrics-port=8081" in c["args"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 8081}
    probe = c["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080

    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def write_policy_args(helm: Path, *sets: str) -> list[str]:
    """The operator flags, as the chart renders them, that decide which objects it writes."""
    args = container(render(helm, *sets))["args"]
    return [a for a in args if a.startswith("--require-managed-label")]


def router_args(helm: Path, *sets: str) -> list[str]:
    """The routers the chart runs (and grants RBAC for), as it renders them."""
    return [a for a in container(render(helm, *sets))["args"] if a.startswith("--routers")]


def test_the_managed_label_is_required_by_default(helm: Path) -> None:
    assert write_policy_args(helm) == ["--require-managed-label"]
    assert write_policy_args(helm, "rbac.scope=namespace") == ["--require-managed-label"]
    assert write_policy_args(helm, "requireManagedLabel=false") == []


def test_values_reach_the_deployment(helm: Path) -> None:
    docs = render(
        helm,
        "image.tag=dev",
        "prometheusAddress=http://prometheus.monitoring:9090",
        "logLevel=debug",
        "metrics.port=9100",
    )
    c = container(docs)
    assert c["image"] == "ghcr.io/segue-dev/segue:dev"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SEGUE_PROMETHEUS_ADDRESS"] == "http://prometheus.monitoring:9090"
    assert "--verbose" in c["args"] and "--metrics-port=9100" in c["args"]
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_webhook_destinations_reach_the_deployment(helm: Path) -> None:
    args = container(render(helm))["args"]
    assert not [a for a in args if "webhook" in a]  # refused by default, no proxy
    args = container(
        render(
            helm,
            "webhooks.allowInternal=true",
            "webhooks.allowHosts={169.254.169.254,*.corp.example}",
            "webhooks.proxy=http://egress.infra:3128",
        )
    )["args"]
    assert [a for a in args if "webhook" in a] == [
        "--allow-internal-webhooks",
        "--allow-webhook-host=169.254.169.254",
        "--allow-webhook-host=*.corp.example",
        "--webhook-proxy=http://egress.infra:3128",
    ]


def test_metrics_service_and_optional_service_monitor(helm: Path) -> None:
    docs = render(helm)
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not by_kind(docs, "ServiceMonitor")

    docs = render(helm, "serviceMonitor.enabled=true", "serviceMonitor.labels.release=kps")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_grafana_dashboard_configmap_only_when_enabled_and_present(
    helm: Path, tmp_path: Path
) -> None:
    chart = tmp_path / "segue"
    shutil.copytree(CHART, chart)
    dashboard = chart / "dashboards" / "segue.json"
    dashboard.unlink(missing_ok=True)
    assert not by_kind(render(helm, "grafanaDashboard.enabled=true", chart=chart), "ConfigMap")

    dashboard.parent.mkdir(exist_ok=True)
    content = {"title": "Segue", "panels": [{"type": "timeseries", "title": "Weight <%>"}]}
    dashboard.write_text(json.dumps(content, indent=2) + "\n")
    assert not by_kind(render(helm, chart=chart), "ConfigMap")
    docs = render(
        helm,
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.namespace=monitoring",
        chart=chart,
    )
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["data"]["segue.json"] == dashboard.read_text()

    # The real dashboard, when the chart carries it, is valid JSON and travels unchanged.
    real = CHART / "dashboards" / "segue.json"
    if real.exists():
        cm = one(render(helm, "grafanaDashboard.enabled=true"), "ConfigMap")
        assert json.loads(cm["data"]["segue.json"]) == json.loads(real.read_text())


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("rbac.scope=bogus", "rbac/scope"),
        ("bogus=1", "additional properties 'bogus'"),
        ("rbac.bogus=1", "additional properties 'bogus'"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("logLevel=trace", "logLevel"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("secretNames={UPPER}", "secretNames"),
        ("metrics.port=8080", "metrics/port"),
        ("metrics.port=80", "metrics/port"),
        ("serviceMonitor.enabled=yes", "serviceMonitor/enabled"),
        ("prometheusAddress=prometheus:9090", "prometheusAddress"),
        ("resources.limits.gpu=1", "additional properties 'gpu'"),
        ("replicas=0", "replicas"),
        ("shards=0", "shards"),
        ("shards=33", "shards"),
        ("leaderElection.leaseName=Not_A_Name", "leaseName"),
        ("webhooks.allowInternal=yes", "webhooks/allowInternal"),
        ("webhooks.proxy=egress:3128", "webhooks/proxy"),
        ("webhooks.allowHosts={a b}", "webhooks/allowHosts"),
        ("webhooks.bogus=1", "additional properties 'bogus'"),
        ("requireManagedLabel=yes", "requireManagedLabel"),
        # Schema-valid, but contradictory: the template refuses it.
        ("watchNamespaces={shop}", "only applies with rbac.scope=namespace"),
    ],
)
def test_bad_values_are_rejected(helm: Path, setting: str, message: str) -> None:
    result = run_helm(helm, "template", "segue", "--set", setting)
    assert result.returncode != 0, f"--set {setting} rendered"
    assert message in result.stderr, result.stderr


# --- installing into the cluster -----------------------------------------------------------


def fresh_namespace(kube: Kube, labels: dict[str, str] | None = None) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube.api_client)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    wait_until(
        f"the default ServiceAccount in {name}",
        lambda: [sa.metadata.name for sa in core.list_namespaced_service_account(name).items],
        lambda names: "default" in names,
        timeout=30,
    )
    return name


@pytest.fixture
def release_namespace(kube: Kube) -> Iterator[str]:
    """A namespace for the Helm release, enforcing the restricted Pod Security Standard, so
    the operator's pod must meet it to be admitted at all."""
    name = fresh_namespace(kube, {"pod-security.kubernetes.io/enforce": "restricted"})
    yield name
    client.CoreV1Api(kube.api_client).delete_namespace(name)


class Release:
    """One `helm install` of the chart, uninstalled by `uninstall()`."""

    def __init__(self, kube: Kube, namespace: str, scope: str, watch: list[str]) -> None:
        self.kube = kube
        self.namespace = namespace
        self.scope = scope
        self.name = f"segue-{uuid.uuid4().hex[:6]}"  # contains "segue": the full name
        self.sa = f"system:serviceaccount:{namespace}:{self.name}"
        self.watch = watch

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kube.bin_dir / "helm"), f"--kubeconfig={self.kube.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result

    def install(self, *sets: str) -> None:
        args = ["install", self.name, str(CHART), "-n", self.namespace, "--wait", "--timeout=3m"]
        args += ["--set", f"rbac.scope={self.scope}"]
        # The admission policies would apply to every namespace of the shared cluster (and
        # their ClusterRole's name is fixed): test_admission.py installs them, scoped.
        args += ["--set", "admission.enabled=false"]
        if self.watch:
            args += ["--set", "watchNamespaces={" + ",".join(self.watch) + "}"]
        for s in sets:
            args += ["--set", s]
        self.helm(*args)

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "-n", self.namespace, "--wait", "--timeout=2m")

    def can(self, verb: str, resource: str, namespace: str | None, sub: str = "") -> bool:
        """`kubectl auth can-i` as the chart's ServiceAccount; namespace None: cluster-wide."""
        args = ["auth", "can-i", verb, resource, f"--as={self.sa}"]
        args += ["--all-namespaces"] if namespace is None else ["-n", namespace]
        if sub:
            args.append(f"--subresource={sub}")
        out = self.kube.kubectl(*args, check=False).stdout.strip()
        assert out in ("yes", "no"), out
        return out == "yes"


@pytest.fixture
def releases(kube: Kube) -> Iterator[list[Release]]:
    made: list[Release] = []
    yield made
    for release in made:
        release.helm("uninstall", release.name, "-n", release.namespace, "--ignore-not-found")


def assert_lease_permissions(release: Release, watched: str) -> None:
    """Leader election: its own Leases (one per possible shard) in the release namespace,
    and no other; list there, for the resize check of shards."""
    ns = release.namespace
    assert release.can("create", "leases.coordination.k8s.io", ns)
    assert release.can("list", "leases.coordination.k8s.io", ns)
    for verb in ("get", "update"):
        for name in (LEASE, f"{LEASE}-0", f"{LEASE}-31"):
            assert release.can(verb, f"leases.coordination.k8s.io/{name}", ns)
        for name in ("other", f"{LEASE}-32", f"{LEASE}-x"):
            assert not release.can(verb, f"leases.coordination.k8s.io/{name}", ns)
    for verb in ("watch", "delete", "patch"):
        assert not release.can(verb, "leases.coordination.k8s.io", ns)
    assert not release.can("list", "leases.coordination.k8s.io", watched)
    assert not release.can("create", "leases.coordination.k8s.io", watched)
    assert not release.can("create", "leases.coordination.k8s.io", None)


def assert_permissions(release: Release, allowed_in: list[str], elsewhere: str) -> None:
    """What the ServiceAccount may do in the namespaces it handles, and nothing more."""
    for ns in allowed_in:
        assert release.can("patch", "rollouts.segue.dev", ns, sub="status")
        assert release.can("watch", "rollouts.segue.dev", ns)
        assert release.can("patch", "httproutes.gateway.networking.k8s.io", ns)
        assert release.can("watch", "deployments.apps", ns)
        assert release.can("watch", "httproutes.gateway.networking.k8s.io", ns)
        assert release.can("patch", "deployments.apps", ns, sub="scale")
        assert not release.can("update", "deployments.apps", ns, sub="scale")
        assert release.can("create", "events", ns)
        assert release.can("get", "secrets/prom-creds", ns)
        assert not release.can("get", "secrets/other", ns)
        assert not release.can("list", "secrets", ns)
        assert not release.can("watch", "secrets", ns)
        assert not release.can("delete", "deployments.apps", ns)
        assert not release.can("update", "deployments.apps", ns)
        assert not release.can("create", "deployments.apps", ns)
        assert not release.can("create", "pods", ns)
        assert not release.can("delete", "pods", ns)
        assert not release.can("create", "rollouts.segue.dev", ns)
        assert not release.can("delete", "rollouts.segue.dev", ns)
        assert not release.can("update", "httproutes.gateway.networking.k8s.io", ns)
        assert not release.can("patch", "services", ns)
        assert not release.can("get", "configmaps", ns)
    assert not release.can("list", "secrets", None)
    assert not release.can("list", "namespaces", None)
    assert not release.can("create", "clusterrolebindings.rbac.authorization.k8s.io", None)
    cluster_wide = release.scope == "cluster"
    assert release.can("list", "rollouts.segue.dev", None) is cluster_wide
    assert not release.can("watch", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert release.can("patch", "rollouts.segue.dev", elsewhere, sub="status") is cluster_wide
    assert release.can("patch", "httproutes.gateway.networking.k8s.io", elsewhere) is (cluster_wide)


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_install_grants_exactly_the_operator_permissions(
    kube: Kube,
    crds: None,  # `kubectl auth can-i` answers "no" for a resource the server does not know
    namespace: str,
    release_namespace: str,
    releases: list[Release],
    scope: str,
) -> None:
    # The release lives in release_namespace; namespace is where Rollouts would be.
    watch = [namespace] if scope == "namespace" else []
    release = Release(kube, release_namespace, scope, watch)
    releases.append(release)
    release.install("secretNames={prom-creds}")
    assert_lease_permissions(release, watched=namespace)

    ns = release_namespace
    kube.kubectl(
        "wait", "--for=condition=Available", f"deployment/{release.name}", "-n", ns, "--timeout=60s"
    )
    kube.kubectl("get", "serviceaccount", release.name, "-n", ns)
    kube.kubectl("get", "service", f"{release.name}-metrics", "-n", ns)
    cluster_rbac = ["clusterrole", release.name], ["clusterrolebinding", release.name]
    if scope == "cluster":
        for kind, name in cluster_rbac:
            kube.kubectl("get", kind, name)
    else:
        for kind, name in cluster_rbac:
            assert kube.kubectl("get", kind, name, check=False).returncode != 0
        kube.kubectl("get", "role", release.name, "-n", namespace)
        kube.kubectl("get", "rolebinding", release.name, "-n", namespace)
        assert kube.kubectl("get", "role", release.name, "-n", ns, check=False).returncode != 0

    # In namespace scope the release namespace itself is not watched: it stands for "elsewhere".
    assert_permissions(release, allowed_in=[namespace], elsewhere=ns)

    release.uninstall()
    releases.remove(release)
    for kind, name in cluster_rbac:
        assert kube.kubectl("get", kind, name, check=False).returncode != 0
    assert kube.kubectl("get", "deployment", release.name, "-n", ns, check=False).returncode != 0
    assert not release.can("patch", "rollouts.segue.dev", namespace, sub="status")


# --- the real operator under the chart's ServiceAccount --------------------------------------


def token_kubeconfig(kube: Kube, release: Release, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (a bound token), against
    the same API server and CA as the test's own kubeconfig."""
    token = kube.kubectl(
        "create", "token", release.name, "-n", release.namespace, "--duration=1h"
    ).stdout.strip()
    view = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    server = dict(view["clusters"][0]["cluster"])
    if "certificate-authority" in server:
        ca = Path(server.pop("certificate-authority")).read_bytes()
        server["certificate-authority-data"] = base64.b64encode(ca).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": "segue", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "segue"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# The API server's wording when RBAC denies a request.
RBAC_DENIAL = re.compile(
    r'cannot (?P<verb>[a-z]+) resource "(?P<resource>[^"]+)" in API group "(?P<group>[^"]*)"'
    r"(?P<where> at the cluster scope| in the namespace)"
)


def rbac_refusals(log: str) -> list[str]:
    """Log lines where RBAC refused the operator something it asked for.

    Other refusals are not about the chart (e.g. posting an Event into a namespace that is
    being deleted, which a cluster-wide operator meets when other tests clean up).
    """
    problems = []
    for line in log.splitlines():
        if RBAC_DENIAL.search(line) or "Not enough permissions" in line:
            problems.append(line)
    return problems


def test_rbac_refusals_are_recognised_in_the_operator_log() -> None:
    sa = 'User "system:serviceaccount:ns:segue"'
    namespaces = (
        "ERROR kopf._cogs.clients.watching: Request attempt #1/9 failed; will retry: GET "
        f"/api/v1/namespaces -> APIForbiddenError('namespaces is forbidden: {sa} cannot list "
        'resource "namespaces" in API group "" at the cluster scope\', ...)'
    )
    route = (
        f'ERROR kopf.objects: ... httproutes.gateway.networking.k8s.io "web" is forbidden: {sa} '
        'cannot patch resource "httproutes" in API group "gateway.networking.k8s.io" in the '
        'namespace "shop"'
    )
    warning = "WARNING kopf._core.reactor.observation: Not enough permissions to list namespaces."
    terminating = (
        'ERROR kopf._core.engines.posting: ... events "segue-" is forbidden: unable to create new '
        "content in namespace t-1 because it is being terminated"
    )
    log = "\n".join([namespaces, route, warning, terminating])
    assert rbac_refusals(log) == [namespaces, route, warning]


def rollout_manifest(router: str) -> Doc:
    traffic: Doc = (
        {"gatewayAPI": {"httpRoute": "web", "legacyBackend": "web-v1", "newBackend": "web-v2"}}
        if router == "gatewayAPI"
        else {"replicas": {}}
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "legacy": {"deployment": "web-v1"},
            "new": {"deployment": "web-v2"},
            "traffic": traffic,
            "steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 100}],
        },
    }


@pytest.mark.parametrize("router", ["gatewayAPI", "replicas"])
@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_operator_runs_under_chart_rbac(
    helm: Path,
    kube: Kube,
    crds: None,
    namespace: str,
    release_namespace: str,
    releases: list[Release],
    tmp_path: Path,
    scope: str,
    router: str,
) -> None:
    """The real operator, authenticated as the chart's ServiceAccount and nothing else, takes
    a Rollout to Succeeded: the chart's RBAC is enough, and the log shows no refusal."""
    release = Release(kube, release_namespace, scope, [namespace] if scope == "namespace" else [])
    releases.append(release)
    release.install()

    rollouts = Rollouts(kube.api_client, namespace)
    replicas = {"gatewayAPI": (2, 2), "replicas": (2, 0)}[router]
    apply(kube, namespace, deployment("web-v1", "web", replicas[0]))
    apply(kube, namespace, deployment("web-v2", "web", replicas[1]))
    if router == "gatewayAPI":
        apply(kube, namespace, httproute("web", "web-v1", "web-v2"))
    wait_until(
        "web-v1 and web-v2 ready",
        lambda: (rollouts.replicas("web-v1")[1], rollouts.replicas("web-v2")[1]),
        lambda ready: ready == replicas,
    )

    kubeconfig = token_kubeconfig(kube, release, tmp_path / "sa.kubeconfig")
    # The arguments the chart gives it: one --namespace per watched namespace, none in
    # cluster scope (then it watches all namespaces), the Lease in the release namespace, and
    # what it may write (the objects from the scenario helpers carry segue.dev/managed=true).
    op = start_operator(
        str(kubeconfig),
        tmp_path / "operator.log",
        release.watch,
        extra_args=[
            "--leader-election-namespace",
            release.namespace,
            *write_policy_args(helm, f"rbac.scope={scope}"),
            *router_args(helm, f"rbac.scope={scope}"),
        ],
    )
    try:
        apply(kube, namespace, rollout_manifest(router))

        def phase() -> str | None:
            if op.proc.poll() is not None:
                raise AssertionError(f"operator exited with {op.proc.returncode}:\n{op.log()}")
            return rollouts.phase("web")

        try:
            wait_until("Rollout web Succeeded", phase, lambda p: p == "Succeeded", timeout=120)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n--- operator log ---\n{op.log()[-6000:]}") from None

        if router == "gatewayAPI":
            assert rollouts.route_weights("web") == (0, 100)
        else:
            wait_until(
                "web-v1 scaled to 0 and web-v2 to 2",
                lambda: (rollouts.replicas("web-v1")[0], rollouts.replicas("web-v2")[0]),
                lambda r: r == (0, 2),
                timeout=30,
            )
        assert rollouts.events("web"), "the operator posted no Event about the Rollout"
        assert rbac_refusals(op.log()) == [], op.log()[-6000:]
        assert f"became leader: Lease {release.namespace}/{LEASE}" in op.log()

        # Delete while the operator runs, so it removes its finalizer and nothing is left.
        custom = client.CustomObjectsApi(kube.api_client)
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "web")

        def names() -> list[str]:
            found: Any = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            return [r["metadata"]["name"] for r in found["items"]]

        wait_until("the Rollout to be gone", names, lambda n: "web" not in n, timeout=30)
    finally:
        op.stop()
        print(f"--- operator log ({op.log_path}) ---\n{op.log()[-6000:]}")
    release.uninstall()
    releases.remove(release)


# --- narrower reach: the namespaced install with requireManagedLabel ------------------------


def without_managed_label(doc: Doc) -> Doc:
    """The object as its owner applies it before opting it in to Segue's writes."""
    labels = doc["metadata"].get("labels") or {}
    doc["metadata"]["labels"] = {k: v for k, v in labels.items() if k != "segue.dev/managed"}
    return doc


def named_rollout(name: str, router: str, app: str) -> Doc:
    manifest = rollout_manifest(router)
    manifest["metadata"]["name"] = name
    manifest["spec"]["legacy"] = {"deployment": f"{app}-v1"}
    manifest["spec"]["new"] = {"deployment": f"{app}-v2"}
    if router == "gatewayAPI":
        manifest["spec"]["traffic"]["gatewayAPI"] = {
            "httpRoute": app,
            "legacyBackend": f"{app}-v1",
            "newBackend": f"{app}-v2",
        }
    return manifest


def condition(rollouts: Rollouts, name: str, type_: str) -> Doc:
    for c in rollouts.status(name).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def test_namespaced_install_writes_only_to_labelled_objects_in_its_namespaces(
    helm: Path,
    kube: Kube,
    crds: None,
    namespace: str,
    release_namespace: str,
    releases: list[Release],
    tmp_path: Path,
) -> None:
    """The recommended install for a shared cluster: rbac.scope=namespace and the chart's
    default requireManagedLabel=true. The operator, authenticated as the chart's
    ServiceAccount, rolls out a Rollout whose objects are labelled; refuses, in status and an
    Event, one whose HTTPRoute or Deployments are not, leaving them untouched; handles it once
    the object is labelled with the command the refusal names; and can neither see nor write
    anything in a namespace outside its scope."""
    release = Release(kube, release_namespace, "namespace", [namespace])
    releases.append(release)
    release.install()
    elsewhere = fresh_namespace(kube)
    core = client.CoreV1Api(kube.api_client)
    op = None
    try:
        rollouts = Rollouts(kube.api_client, namespace)
        outside = Rollouts(kube.api_client, elsewhere)
        # web: everything labelled (the helpers opt objects in). gw: its HTTPRoute is not.
        # rep: the two Deployments the replicas router would scale are not.
        apply(
            kube,
            namespace,
            deployment("web-v1", "web"),
            deployment("web-v2", "web"),
            httproute("web", "web-v1", "web-v2"),
            deployment("gw-v1", "gw"),
            deployment("gw-v2", "gw"),
            without_managed_label(httproute("gw", "gw-v1", "gw-v2")),
            without_managed_label(deployment("rep-v1", "rep", 2)),
            without_managed_label(deployment("rep-v2", "rep", 0)),
        )
        # Outside the operator's namespaces, even labelled objects are out of its reach.
        apply(
            kube,
            elsewhere,
            deployment("web-v1", "web"),
            deployment("web-v2", "web"),
            httproute("web", "web-v1", "web-v2"),
        )
        ready = [(rollouts, n) for n in ("web-v1", "web-v2", "gw-v1", "gw-v2", "rep-v1")]
        for where, name in [*ready, (outside, "web-v1")]:
            wait_until(f"{name} ready", partial(where.replicas, name), lambda r: r[1] == 2)

        kubeconfig = token_kubeconfig(kube, release, tmp_path / "sa.kubeconfig")
        op = start_operator(
            str(kubeconfig),
            tmp_path / "operator.log",
            release.watch,
            extra_args=[
                "--leader-election-namespace",
                release.namespace,
                *write_policy_args(helm, "rbac.scope=namespace"),
                *router_args(helm, "rbac.scope=namespace"),
            ],
        )
        apply(
            kube,
            namespace,
            named_rollout("web", "gatewayAPI", "web"),
            named_rollout("gw", "gatewayAPI", "gw"),
            named_rollout("rep", "replicas", "rep"),
        )
        apply(kube, elsewhere, named_rollout("web", "gatewayAPI", "web"))

        def phase(name: str) -> str | None:
            if op is not None and op.proc.poll() is not None:
                raise AssertionError(f"operator exited with {op.proc.returncode}:\n{op.log()}")
            return rollouts.phase(name)

        def stalled(name: str) -> Doc:
            phase(name)  # the operator still runs
            return condition(rollouts, name, "Stalled")

        def refused(name: str) -> str | None:
            return stalled(name).get("reason")

        try:
            wait_until(
                "web Succeeded",
                partial(phase, "web"),
                lambda p: p == "Succeeded",
                timeout=120,
            )
            for name in ("gw", "rep"):
                wait_until(
                    f"{name} refused (NotManaged)",
                    partial(refused, name),
                    lambda r: r == "NotManaged",
                    timeout=60,
                )
        except TimeoutError as e:
            raise AssertionError(f"{e}\n--- operator log ---\n{op.log()[-6000:]}") from None
        assert rollouts.route_weights("web") == (0, 100)

        # The refusal: in status, in a Warning Event, naming the object and the fix.
        gw = rollouts.status("gw")
        fix = f"kubectl label httproute gw -n {namespace} segue.dev/managed=true"
        message = (
            f"not managed: HTTPRoute {namespace}/gw is not labelled segue.dev/managed=true, "
            "and this operator writes only to labelled objects; to let Segue move traffic, "
            f"opt it in: {fix}"
        )
        assert (gw["phase"], gw.get("weight", 0), gw["message"]) == ("Pending", 0, message)
        assert stalled("gw")["status"] == "True" and stalled("gw")["message"] == message
        assert ("Warning", "NotManaged", message) in rollouts.events("gw")
        rep = rollouts.status("rep")
        assert rep["phase"] == "Pending" and rep.get("weight", 0) == 0
        assert rep["message"].endswith(
            f"kubectl label deployment rep-v1 rep-v2 -n {namespace} segue.dev/managed=true"
        )
        assert [e for e in rollouts.events("rep") if e[:2] == ("Warning", "NotManaged")]
        # Untouched: the route's weights, the Deployments' replicas and annotations, and
        # nothing written by Segue's field manager.
        assert rollouts.route_weights("gw") == (100, 0)
        assert rollouts.replicas("rep-v1")[0] == 2 and rollouts.replicas("rep-v2")[0] == 0
        for name in ("rep-v1", "rep-v2"):
            d = client.AppsV1Api(kube.api_client).read_namespaced_deployment(name, namespace)
            assert not [k for k in d.metadata.annotations or {} if k.startswith("segue.dev/")]
            assert "segue" not in {m.manager for m in d.metadata.managed_fields or []}
        route: Any = client.CustomObjectsApi(kube.api_client).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", "gw"
        )
        assert "segue" not in {m["manager"] for m in route["metadata"]["managedFields"]}

        # Outside its namespaces: the Rollout there was never seen, its route never written,
        # and the API server refuses the ServiceAccount's writes there outright.
        assert not outside.get("web").get("status")
        assert outside.route_weights("web") == (100, 0)
        patch = '{"spec":{"replicas":0}}'
        for args in (
            [
                "patch",
                "httproute",
                "web",
                "--type=merge",
                "-p",
                '{"metadata":{"labels":{"x":"y"}}}',
            ],
            ["patch", "deployment", "web-v1", "--subresource=scale", "--type=merge", "-p", patch],
            ["get", "deployment", "web-v1"],
        ):
            answer = kube.kubectl(*args, "-n", elsewhere, f"--as={release.sa}", check=False)
            assert answer.returncode != 0 and "forbidden" in answer.stderr.lower(), answer

        # Opting in with the command the refusal names lets the Rollout go.
        command = message.split("opt it in: ")[1].split()
        assert command[0] == "kubectl"
        kube.kubectl(*command[1:])
        try:
            wait_until(
                "gw Succeeded once labelled",
                partial(phase, "gw"),
                lambda p: p == "Succeeded",
                timeout=120,
            )
        except TimeoutError as e:
            raise AssertionError(f"{e}\n--- operator log ---\n{op.log()[-6000:]}") from None
        assert rollouts.route_weights("gw") == (0, 100)
        assert stalled("gw")["status"] == "False"
        assert rbac_refusals(op.log()) == [], op.log()[-6000:]

        # Deleted while the operator runs: the refused Rollout never moved traffic, so its
        # finalizer goes at once; nothing is left behind.
        custom = client.CustomObjectsApi(kube.api_client)
        for name in ("web", "gw", "rep"):
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

        def names() -> list[str]:
            found: Any = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            return [r["metadata"]["name"] for r in found["items"]]

        wait_until("the Rollouts to be gone", names, lambda n: n == [], timeout=30)
        assert rollouts.replicas("rep-v1")[0] == 2 and rollouts.replicas("rep-v2")[0] == 0
    finally:
        if op is not None:
            op.stop()
            print(f"--- operator log ({op.log_path}) ---\n{op.log()[-6000:]}")
        core.delete_namespace(elsewhere)
    release.uninstall()
    releases.remove(release)
