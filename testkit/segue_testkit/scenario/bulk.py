"""Creating many objects quickly: one POST each, from a pool of threads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, config

THREADS = 16


def create(api: client.ApiClient, namespace: str, doc: dict[str, Any]) -> None:
    """Create one namespaced object: a Deployment, a Service, or a custom object whose
    plural is its kind in lower case plus "s" (HTTPRoute, Rollout)."""
    kind = doc["kind"]
    body: Any = doc  # the client sends a dict as it is
    if kind == "Deployment":
        client.AppsV1Api(api).create_namespaced_deployment(namespace, body)
    elif kind == "Service":
        client.CoreV1Api(api).create_namespaced_service(namespace, body)
    else:
        group, _, version = doc["apiVersion"].rpartition("/")
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            group, version, namespace, kind.lower() + "s", doc
        )


def create_all(
    api: client.ApiClient,
    namespace: str,
    docs: Sequence[dict[str, Any]],
    threads: int = THREADS,
    on_done: Callable[[int], None] | None = None,
) -> None:
    """Create ``docs`` in ``namespace`` from ``threads`` threads; ``on_done(count)`` after
    each. The client's connection pool must allow ``threads`` connections (see
    ``pooled_client``)."""
    done = 0

    def one(doc: dict[str, Any]) -> None:
        create(api, namespace, doc)

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(one, docs):
            done += 1
            if on_done is not None:
                on_done(done)


def pooled_client(kubeconfig: str, connections: int = THREADS) -> client.ApiClient:
    """A client for ``kubeconfig`` whose pool keeps ``connections`` connections open."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)
