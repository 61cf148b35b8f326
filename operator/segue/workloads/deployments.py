"""Deployment readiness and scaling for the legacy and new versions."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from segue import FIELD_MANAGER


class DeploymentMissing(Exception):
    """A Deployment the Rollout names does not exist."""


@dataclass(frozen=True)
class DeploymentState:
    name: str
    desired: int  # spec.replicas
    ready: int  # pods Ready, as the Deployment controller counts them
    updated: int
    annotations: dict[str, str]
    template_hash: str = ""  # of the pod template: a new image is a new version

    @property
    def settled(self) -> bool:
        """Every desired pod is ready and up to date."""
        return self.ready == self.desired and self.updated >= self.desired


class Deployments:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._api = api
        self._apps = client.AppsV1Api(api)
        self.namespace = namespace

    async def read(self, name: str) -> DeploymentState:
        try:
            d = await asyncio.to_thread(self._apps.read_namespaced_deployment, name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                raise DeploymentMissing(f"Deployment {self.namespace}/{name}") from e
            raise
        spec, status, meta = d.spec, d.status, d.metadata
        template = self._api.sanitize_for_serialization(spec.template) if spec else None  # type: ignore[no-untyped-call]
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
        replicas = spec.replicas if spec is not None else None
        return DeploymentState(
            name=name,
            desired=replicas if replicas is not None else 1,
            ready=(status.ready_replicas if status else None) or 0,
            updated=(status.updated_replicas if status else None) or 0,
            annotations=dict((meta.annotations if meta else None) or {}),
            template_hash=digest[:12],
        )

    async def scale(self, name: str, replicas: int) -> None:
        """Set spec.replicas through the scale subresource (writes nothing else)."""
        await asyncio.to_thread(
            self._apps.patch_namespaced_deployment_scale,
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
            field_manager=FIELD_MANAGER,
        )

    async def annotate(self, name: str, annotations: dict[str, str | None]) -> None:
        await asyncio.to_thread(
            self._apps.patch_namespaced_deployment,
            name,
            self.namespace,
            {"metadata": {"annotations": annotations}},
            field_manager=FIELD_MANAGER,
        )
