"""The operator's Kubernetes API client, and the Rollout reads and writes it makes.

Every blocking client call runs in a thread (``asyncio.to_thread``); the event loop never
waits on the network. Requests are counted per verb so the cost of a step can be measured.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from segue import FIELD_MANAGER, GROUP, PLURAL, VERSION

Json = dict[str, Any]


class RequestCounter:
    """Tells its listeners (the operator's metrics) about every API request, by method."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str], None]] = []

    def add(self, method: str) -> None:
        for listener in self.listeners:
            listener(method)


REQUESTS = RequestCounter()


def make_api_client() -> client.ApiClient:
    """In-cluster credentials when running in a Pod, else the current KUBECONFIG."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    api = client.ApiClient(configuration)
    call_api: Callable[..., Any] = api.call_api

    def counted(method: str, *args: Any, **kwargs: Any) -> Any:
        REQUESTS.add(method)
        return call_api(method, *args, **kwargs)

    api.call_api = counted  # type: ignore[method-assign]
    return api


def is_status(e: BaseException, *codes: int) -> bool:
    return isinstance(e, ApiException) and e.status in codes


class Rollouts:
    """Reads and writes of Rollout objects."""

    def __init__(self, api: client.ApiClient) -> None:
        self._objects = client.CustomObjectsApi(api)

    async def get(self, namespace: str, name: str) -> Json | None:
        try:
            obj = await asyncio.to_thread(
                lambda: self._objects.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj if isinstance(obj, dict) else None

    async def patch_status(
        self, namespace: str, name: str, status: Json, resource_version: str | None
    ) -> Json:
        """Merge-patch the status subresource. With ``resource_version`` the write fails
        (409) if the Rollout changed since it was read, so a decision never lands on state
        it did not see."""
        body: Json = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        obj = await asyncio.to_thread(
            lambda: self._objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, field_manager=FIELD_MANAGER
            )
        )
        return obj if isinstance(obj, dict) else {}

    async def remove_annotations(self, namespace: str, name: str, keys: list[str]) -> None:
        if not keys:
            return
        body = {"metadata": {"annotations": dict.fromkeys(keys)}}
        try:
            await asyncio.to_thread(
                lambda: self._objects.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, body, field_manager=FIELD_MANAGER
                )
            )
        except ApiException as e:
            if e.status != 404:
                raise


class Secrets:
    """Reads the few Secrets a Rollout names (Prometheus credentials, webhook URLs)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    async def read(self, namespace: str, name: str) -> dict[str, str]:
        secret = await asyncio.to_thread(lambda: self._core.read_namespaced_secret(name, namespace))
        data = secret.data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
