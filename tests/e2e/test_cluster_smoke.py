"""Proof that the local cluster and Prometheus are real, not stand-ins."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.e2e.conftest import Kube, Prometheus


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


def deployment(name: str, replicas: int, image: str) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            strategy=client.V1DeploymentStrategy(
                type="RollingUpdate",
                rolling_update=client.V1RollingUpdateDeployment(max_surge=1, max_unavailable=0),
            ),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="app",
                            image=image,
                            ports=[client.V1ContainerPort(container_port=8080)],
                        )
                    ]
                ),
            ),
        ),
    )


def available(apps: client.AppsV1Api, ns: str, name: str, replicas: int) -> bool:
    d = apps.read_namespaced_deployment_status(name, ns)
    s = d.status
    return bool(
        s.observed_generation == d.metadata.generation
        and s.updated_replicas == replicas
        and s.available_replicas == replicas
        and (s.replicas or 0) == replicas
    )


def test_nodes_are_kwok_nodes_and_ready(kube: Kube) -> None:
    nodes = client.CoreV1Api(kube.api_client).list_node().items
    assert len(nodes) >= 1
    for node in nodes:
        assert node.metadata.annotations.get("kwok.x-k8s.io/node") == "fake"
        ready = {c.type: c.status for c in node.status.conditions}
        assert ready.get("Ready") == "True", node.metadata.name
        assert not node.spec.taints


def test_deployment_becomes_available_with_running_ready_pods(kube: Kube, namespace: str) -> None:
    apps = client.AppsV1Api(kube.api_client)
    core = client.CoreV1Api(kube.api_client)
    apps.create_namespaced_deployment(namespace, deployment("web", 3, "example/web:1"))
    eventually(lambda: available(apps, namespace, "web", 3), what="Deployment web Available")

    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.status.phase == "Running"
        assert pod.spec.node_name.startswith("kwok-node-")
        conditions = {c.type: c.status for c in pod.status.conditions}
        assert conditions["Ready"] == "True"
        assert pod.status.pod_ip


def test_rolling_update_completes_and_service_gets_endpointslices(
    kube: Kube, namespace: str
) -> None:
    apps = client.AppsV1Api(kube.api_client)
    core = client.CoreV1Api(kube.api_client)
    discovery = client.DiscoveryV1Api(kube.api_client)
    apps.create_namespaced_deployment(namespace, deployment("api", 3, "example/api:1"))
    eventually(lambda: available(apps, namespace, "api", 3), what="Deployment api Available")

    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="api"),
            spec=client.V1ServiceSpec(
                selector={"app": "api"}, ports=[client.V1ServicePort(port=80, target_port=8080)]
            ),
        ),
    )

    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example/api:2"}]}}}
    }
    apps.patch_namespaced_deployment("api", namespace, patch)

    def rolled() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="app=api").items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        return (
            available(apps, namespace, "api", 3)
            and len(live) == 3
            and all(p.spec.containers[0].image == "example/api:2" for p in live)
        )

    eventually(rolled, timeout=90, what="rolling update to example/api:2")
    rs = apps.list_namespaced_replica_set(namespace, label_selector="app=api").items
    assert sorted((r.spec.replicas or 0) for r in rs) == [0, 3], "old ReplicaSet scaled to zero"

    def ready_endpoints() -> int:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=api"
        ).items
        return sum(
            1 for s in slices for e in (s.endpoints or []) if e.conditions and e.conditions.ready
        )

    eventually(
        lambda: ready_endpoints() == 3, what="3 ready endpoints in the EndpointSlices of api"
    )


WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.segue.dev}
spec:
  group: smoke.segue.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
"""


def test_crd_schema_validation_is_enforced_by_the_api_server(kube: Kube, namespace: str) -> None:
    kube.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kube.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.smoke.segue.dev", "--timeout=30s"
    )
    good = "apiVersion: smoke.segue.dev/v1\nkind: Widget\nmetadata: {name: ok}\nspec: {size: 3}\n"
    eventually(
        lambda: (
            kube.kubectl("apply", "-n", namespace, "-f", "-", input=good, check=False).returncode
            == 0
        ),
        timeout=30,
        what="the Widget kind to be served",
    )
    custom = client.CustomObjectsApi(kube.api_client)
    widget: Any = custom.get_namespaced_custom_object(
        "smoke.segue.dev", "v1", namespace, "widgets", "ok"
    )
    assert widget["spec"] == {"size": 3}

    bad = "apiVersion: smoke.segue.dev/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 42}\n"
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert "spec.size" in result.stderr and "less than or equal to 10" in result.stderr
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object("smoke.segue.dev", "v1", namespace, "widgets", "bad")
    assert err.value.status == 404


def test_prometheus_scrapes_a_target_started_by_the_test(prometheus: Prometheus) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("segue_smoke_value", "A value set by the smoke test", registry=registry)
    gauge.set(42.5)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_address[1]
        prometheus.add_scrape_target("smoke", f"127.0.0.1:{port}")
        value = eventually(
            lambda: prometheus.query('segue_smoke_value{job="smoke"}'),
            timeout=30,
            what="the smoke gauge in Prometheus",
        )
        assert value == 42.5
        gauge.set(7)
        eventually(
            lambda: prometheus.query('segue_smoke_value{job="smoke"}') == 7,
            timeout=30,
            what="the new gauge value",
        )
    finally:
        prometheus.remove_scrape_target("smoke")
        server.shutdown()
        thread.join(timeout=5)
