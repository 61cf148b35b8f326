"""Deployment readiness (from the watched object) and scaling for the legacy and new
versions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from segue import FIELD_MANAGER, is_managed

T = TypeVar("T")
Json = dict[str, Any]


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
    # metadata.generation: tells when the template must be hashed again. Not compared: a
    # scale write bumps it, and nothing a Rollout reads changes with it alone.
    generation: int = field(default=0, compare=False)
    managed: bool = False  # labelled segue.dev/managed=true (see segue.is_managed)

    @property
    def settled(self) -> bool:
        """Every desired pod is ready and up to date."""
        return self.ready == self.desired and self.updated >= self.desired

    @classmethod
    def from_body(
        cls, body: dict[str, Any], previous: DeploymentState | None = None
    ) -> DeploymentState:
        """The few fields Segue needs, from a Deployment as the API serves it. The template
        is hashed again only when the spec changed (most events are status updates)."""
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        generation = int(meta.get("generation") or 0)
        if previous is not None and previous.generation == generation and generation:
            digest = previous.template_hash
        else:
            template = _without_nulls(spec.get("template"))
            digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
        replicas = spec.get("replicas")
        annotations = meta.get("annotations") or {}
        return cls(
            name=str(meta.get("name", "")),
            desired=int(replicas) if replicas is not None else 1,
            ready=int(status.get("readyReplicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            # Only Segue's own annotations matter here; the rest stays out of memory.
            annotations={
                k: str(v) for k, v in annotations.items() if str(k).startswith("segue.dev/")
            },
            template_hash=digest[:12],
            generation=generation,
            managed=is_managed(meta.get("labels")),
        )


def _without_nulls(value: Any) -> Any:
    """The pod template as the client library serialises it: no null fields."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _answer(response: Any) -> Json:
    """The answer to a write as JSON, without turning it into a model first; its
    connection goes back to the pool."""
    try:
        data = response.read()
    finally:
        response.release_conn()
    try:
        answer = json.loads(data)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


class Calls(Protocol):
    async def call(self, fn: Callable[[client.ApiClient], T]) -> T: ...


class Deployments:
    """Writes to Deployments: the scale subresource and Segue's annotations, nothing else;
    and a read past the watch where a decision must not rest on the store alone."""

    def __init__(self, calls: Calls, namespace: str) -> None:
        self._calls = calls
        self.namespace = namespace

    async def scale(self, name: str, replicas: int) -> Json:
        """Set spec.replicas through the scale subresource (writes nothing else). Returns
        the Scale as answered: its resourceVersion is the Deployment's."""
        body = {"spec": {"replicas": replicas}}
        return await self._calls.call(
            lambda api: _answer(
                client.AppsV1Api(api).patch_namespaced_deployment_scale(
                    name, self.namespace, body, field_manager=FIELD_MANAGER, _preload_content=False
                )
            )
        )

    async def get(self, name: str) -> Json | None:
        """The Deployment as the API server has it now (None: it does not exist)."""
        try:
            return await self._calls.call(
                lambda api: _answer(
                    client.AppsV1Api(api).read_namespaced_deployment(
                        name, self.namespace, _preload_content=False
                    )
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def annotate(
        self, name: str, annotations: dict[str, str | None], replicas: int | None = None
    ) -> Json:
        """Merge Segue's annotations, and with ``replicas`` set spec.replicas in the same
        write (one request where the scale subresource and an annotation would be two).
        Returns the Deployment as answered."""
        body: dict[str, Any] = {"metadata": {"annotations": annotations}}
        if replicas is not None:
            body["spec"] = {"replicas": replicas}
        return await self._calls.call(
            lambda api: _answer(
                client.AppsV1Api(api).patch_namespaced_deployment(
                    name, self.namespace, body, field_manager=FIELD_MANAGER, _preload_content=False
                )
            )
        )
