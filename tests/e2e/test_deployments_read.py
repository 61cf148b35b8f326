"""The one read of a Deployment past the watch (``Deployments.get``, used before an abort of a
Succeeded Rollout) against the real API server: a Deployment that exists comes back as it
is, and one that does not exist is None rather than an error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from kubernetes import client

from segue.workloads.deployments import Deployments
from tests.e2e.conftest import Kube
from tests.e2e.support import apply, deployment

T = TypeVar("T")


class Direct:
    """The operator's ``Calls`` protocol on a plain client, one thread per call."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    async def call(self, fn: Callable[[client.ApiClient], T]) -> T:
        return await asyncio.to_thread(fn, self.api)


def test_a_deployment_is_read_as_it_is_and_a_missing_one_is_none(
    kube: Kube, namespace: str
) -> None:
    apply(kube, namespace, deployment("legacy", "shop", 0))
    deployments = Deployments(Direct(kube.api_client), namespace)

    async def read() -> None:
        body = await deployments.get("legacy")
        assert body is not None
        assert body["metadata"]["name"] == "legacy"
        assert body["metadata"]["namespace"] == namespace
        assert await deployments.get("gone") is None
        client.AppsV1Api(kube.api_client).delete_namespaced_deployment("legacy", namespace)
        assert await deployments.get("legacy") is None

    asyncio.run(read())
