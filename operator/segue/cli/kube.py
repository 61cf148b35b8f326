"""Cluster access for the CLI: kubeconfig, reads of Rollouts and Migrations, annotation
patches and watches.

API errors become :class:`CliError` with a message that names the object, so commands never
print a raw HTTP body.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from segue import GROUP, KIND, PLURAL, VERSION
from segue.api.migration import MIGRATION_KIND, MIGRATION_PLURAL
from segue.cli.errors import CliError

FIELD_MANAGER: Final = "segue-cli"
REQUEST_TIMEOUT: Final = (5.0, 30.0)  # connect, read (seconds)
WATCH_SECONDS: Final = 240  # a watch is re-opened (after a fresh list) at least this often
_SA_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

Obj = dict[str, Any]


class Conflict(Exception):
    """The object changed between read and write; read it again and re-check."""


@dataclass(frozen=True)
class Kind:
    """One of Segue's resources, as the CLI names it."""

    kind: str  # "Rollout"
    plural: str  # "rollouts"

    @property
    def noun(self) -> str:
        """How messages name one: "rollout shop/checkout"."""
        return self.kind.lower()


ROLLOUT: Final = Kind(KIND, PLURAL)
MIGRATION: Final = Kind(MIGRATION_KIND, MIGRATION_PLURAL)


def connect(kubeconfig: str | None, context: str | None) -> tuple[client.ApiClient, str]:
    """An API client and the namespace to default to (the context's, else ``default``).

    Outside a kubeconfig (a CI job in a Pod), the in-cluster service account is used.
    """
    if kubeconfig is None and context is None and _in_cluster_only():
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        namespace = _SA_NAMESPACE.read_text().strip() if _SA_NAMESPACE.exists() else "default"
        return client.ApiClient(), namespace or "default"
    try:
        api = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as e:
        raise CliError(f"cannot load kubeconfig: {e}") from e
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    return api, str(namespace)


def _in_cluster_only() -> bool:
    default = Path(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
    return "KUBERNETES_SERVICE_HOST" in os.environ and not default.expanduser().exists()


def _api_message(e: ApiException) -> str:
    try:
        body = json.loads(e.body or "")
        return str(body.get("message") or e.reason)
    except (ValueError, AttributeError):
        return str(e.reason or e.status)


# How the API server words a ValidatingAdmissionPolicy's refusal.
_ADMISSION_REFUSAL: Final = re.compile(
    r"ValidatingAdmissionPolicy '[^']*' with binding '[^']*' denied request: (?P<why>.*)", re.S
)


def _missing_object(e: ApiException) -> bool:
    """A 404 for the object itself, as opposed to the resource type (no CRD installed)."""
    try:
        details = json.loads(e.body or "").get("details") or {}
    except (ValueError, AttributeError):
        return False
    return bool(details.get("name"))


def translate(e: ApiException, what: str, kind: Kind = ROLLOUT) -> CliError:
    """An API error as a sentence about ``what`` (e.g. "rollout shop/checkout")."""
    if e.status == 404:
        if _missing_object(e):
            return CliError(f"{what} not found")
        return CliError(
            f"the {kind.kind} API ({kind.plural}.{GROUP}/{VERSION}) is not served by this "
            "cluster; is the Segue CRD installed?"
        )
    if e.status in (401, 403):
        message = _api_message(e)
        refused = _ADMISSION_REFUSAL.search(message)
        if refused:  # an admission policy's own words say what is missing and how to fix it
            return CliError(f"{what}: refused by the API server: {refused.group('why')}")
        return CliError(f"not allowed to access {what}: {message}")
    return CliError(f"{what}: the API server answered {e.status}: {_api_message(e)}")


@dataclass(frozen=True)
class WatchEvent:
    """What the watch thread hands the display: a full list (after (re)connecting), one
    changed object, or a connection problem it is recovering from."""

    kind: str  # "SNAPSHOT" | "ADDED" | "MODIFIED" | "DELETED" | "ERROR"
    objects: list[Obj] = field(default_factory=list)
    error: str | None = None


class Resource:
    """One of Segue's resources (Rollouts, Migrations), through the official client's
    CustomObjectsApi."""

    def __init__(self, api: client.ApiClient, kind: Kind = ROLLOUT) -> None:
        self.kind = kind
        self._api = client.CustomObjectsApi(api)
        self._auth = client.AuthenticationV1Api(api)
        self.server = str(getattr(api.configuration, "host", "") or "the API server")

    def whoami(self) -> str | None:
        """The user name the API server knows this client as (a SelfSubjectReview,
        authentication.k8s.io/v1), or None when it cannot say."""
        try:
            review = self._auth.create_self_subject_review(
                client.V1SelfSubjectReview(), _request_timeout=REQUEST_TIMEOUT
            )
        except (ApiException, urllib3.exceptions.HTTPError, ValueError):
            return None
        info = review.status.user_info if review.status is not None else None
        name = info.username if info is not None else None
        return str(name) if name else None

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ApiException as e:
            if e.status == 409:
                raise Conflict(_api_message(e)) from e
            raise translate(e, what, self.kind) from e
        except urllib3.exceptions.HTTPError as e:
            raise CliError(f"cannot reach {self.server}: {e}") from e

    def get(self, namespace: str, name: str) -> Obj:
        obj: Obj = self._call(
            f"{self.kind.noun} {namespace}/{name}",
            lambda: self._api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, self.kind.plural, name, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return obj

    def list(self, namespace: str | None, name: str | None = None) -> tuple[list[Obj], str]:
        """The objects of a namespace (all namespaces with None), and the list's
        resourceVersion to watch from."""
        selector = f"metadata.name={name}" if name else None
        if namespace is None:
            result = self._call(
                f"{self.kind.plural} in all namespaces",
                lambda: self._api.list_cluster_custom_object(
                    GROUP,
                    VERSION,
                    self.kind.plural,
                    field_selector=selector,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        else:
            result = self._call(
                f"{self.kind.plural} in namespace {namespace}",
                lambda: self._api.list_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    self.kind.plural,
                    field_selector=selector,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        items: list[Obj] = list(result.get("items") or [])
        return items, str((result.get("metadata") or {}).get("resourceVersion") or "")

    def patch_annotations(
        self,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        resource_version: str | None = None,
    ) -> Obj:
        """A JSON merge patch of metadata.annotations (None removes a key). With
        ``resource_version`` it fails with :class:`Conflict` if the object changed since it
        was read, so a command never acts on a state the user did not see."""
        meta: Obj = {"annotations": dict(annotations)}
        if resource_version:
            meta["resourceVersion"] = resource_version
        obj: Obj = self._call(
            f"{self.kind.noun} {namespace}/{name}",
            lambda: self._api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                self.kind.plural,
                name,
                {"metadata": meta},
                field_manager=FIELD_MANAGER,
                # The client would pick a patch type CustomResources do not support.
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        return obj

    def follow(
        self,
        namespace: str | None,
        name: str | None,
        emit: Callable[[WatchEvent], None],
        stop: threading.Event,
    ) -> None:
        """List, then watch from the list's resourceVersion; repeat after a watch ends or
        fails (expired resourceVersion, lost connection). Blocks: run it in a thread."""
        backoff = 1.0
        while not stop.is_set():
            try:
                items, version = self.list(namespace, name)
                emit(WatchEvent("SNAPSHOT", items))
                backoff = 1.0
                self._watch(namespace, name, version, emit, stop)
            except (CliError, Conflict) as e:
                emit(WatchEvent("ERROR", error=str(getattr(e, "message", e))))
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                # An expired watch (410), a dropped connection: list again and carry on.
                emit(WatchEvent("ERROR", error=f"watch interrupted ({e}); reconnecting"))
            else:
                continue
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _watch(
        self,
        namespace: str | None,
        name: str | None,
        version: str,
        emit: Callable[[WatchEvent], None],
        stop: threading.Event,
    ) -> None:
        w = watch.Watch()  # type: ignore[no-untyped-call]
        selector = {"field_selector": f"metadata.name={name}"} if name else {}
        if namespace is None:
            fn: Callable[..., Any] = self._api.list_cluster_custom_object
            args: tuple[str, ...] = (GROUP, VERSION, self.kind.plural)
        else:
            fn = self._api.list_namespaced_custom_object
            args = (GROUP, VERSION, namespace, self.kind.plural)
        started = time.monotonic()
        for event in w.stream(  # type: ignore[no-untyped-call]
            fn,
            *args,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=(REQUEST_TIMEOUT[0], WATCH_SECONDS + 30),
            **selector,
        ):
            if stop.is_set():
                w.stop()  # type: ignore[no-untyped-call]
                return
            kind = str(event.get("type"))
            raw = event.get("raw_object")
            if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(raw, dict):
                emit(WatchEvent(kind, [raw]))
            elif kind == "ERROR":
                raise ApiException(status=(raw or {}).get("code"), reason=str(raw))
        if time.monotonic() - started < 1:
            stop.wait(1)  # the server closed at once; do not spin
