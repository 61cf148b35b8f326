"""flagd router: the ``defaultVariant`` and ``targeting`` of one flag in a flagd
flag-definitions document kept under one key of a ConfigMap (see ``targeting.py`` for what
is written).

The ConfigMap is read from the watch stream, which carries only ConfigMaps labelled
``segue.dev/managed=true``: an unlabelled one is not seen at all, so the label is needed
whatever ``require_managed`` says. The document is at most 1 MiB (what the API server
allows a ConfigMap) and must be valid JSON with the flag and both variants; anything else
is a RouterError naming the ConfigMap, the key, the place in the document and the spec
field. A write is one JSON patch of ``/data/<key>`` with the field manager "segue",
guarded by a ``test`` of the text it was computed from and of the label, so an edit made
since the watch saw the ConfigMap (or a label removed a moment ago) fails the write rather
than being overwritten. Weight, segment and rollback all go in that one write.
"""

from __future__ import annotations

import json
from typing import Any, Final

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from segue import MANAGED_LABEL, MANAGED_VALUE
from segue.api.routing import Segment
from segue.traffic.base import (
    FIELD_MANAGER,
    Calls,
    ClusterView,
    Ref,
    RouterContext,
    RouterError,
    not_managed,
    unmanaged_object,
)
from segue.traffic.flagd.plugin import KIND, MAX_DOCUMENT_BYTES, FlagdSettings
from segue.traffic.flagd.targeting import (
    FlagError,
    Split,
    Variants,
    desired,
    find_flag,
    is_current,
    parse_document,
    read_split,
    render,
    with_split,
)

# What the API server says (422) when a JSON patch does not apply, e.g. a `test` failed.
PATCH_NOT_APPLIED: Final = "the server rejected our request due to an error in our request"
LABEL_PATH: Final = "/metadata/labels/" + MANAGED_LABEL.replace("~", "~0").replace("/", "~1")


def build(ctx: RouterContext, settings: FlagdSettings) -> FlagdRouter:
    return FlagdRouter(
        ctx.view,
        ctx.calls,
        ctx.namespace,
        settings.config_map,
        settings.key,
        Variants(settings.flag, settings.legacy_variant, settings.new_variant),
        require_managed=ctx.require_managed,
    )


class FlagdRouter:
    manages_capacity = False

    def __init__(
        self,
        view: ClusterView,
        calls: Calls,
        namespace: str,
        config_map: str,
        key: str,
        names: Variants,
        *,
        require_managed: bool = False,
    ) -> None:
        self._view = view
        self._calls = calls
        self.namespace = namespace
        self.config_map = config_map
        self.key = key
        self.names = names
        self.require_managed = require_managed

    @property
    def _where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.config_map}"

    def watches(self) -> list[Ref]:
        return [(KIND, self.namespace, self.config_map)]

    def unmanaged(self) -> list[Ref]:
        return unmanaged_object(
            self._view, KIND, self.namespace, self.config_map, self.require_managed
        )

    def _text(self) -> str:
        found = self._view.get(KIND, self.namespace, self.config_map)
        if found is None:
            raise RouterError(
                f"{self._where} not found among the ConfigMaps labelled "
                f"{MANAGED_LABEL}={MANAGED_VALUE} (spec.traffic.flagd.configMap; Segue "
                "watches no others): create it, or label it: kubectl label configmap "
                f"{self.config_map} -n {self.namespace} {MANAGED_LABEL}={MANAGED_VALUE}"
            )
        data = found.get("data") or {}
        text = data.get(self.key)
        if not isinstance(text, str):
            raise RouterError(
                f"{self._where} has no key {self.key} (spec.traffic.flagd.key) (it has: "
                f"{', '.join(sorted(data)[:10]) or 'none'}); put the flag document there, "
                "or name its key"
            )
        size = len(text.encode())
        if size > MAX_DOCUMENT_BYTES:
            raise RouterError(
                f"{self._where} key {self.key}: the document is {size} bytes, more than "
                f"the {MAX_DOCUMENT_BYTES} a ConfigMap holds"
            )
        return text

    def _flag(self) -> tuple[str, dict[str, Any]]:
        text = self._text()
        try:
            return text, find_flag(parse_document(text), self.names)
        except FlagError as e:
            raise RouterError(f"{self._where} key {self.key}: {e}") from None

    def _split(self) -> Split:
        _, flag = self._flag()
        try:
            return read_split(flag, self.names)
        except FlagError as e:
            raise RouterError(f"{self._where} key {self.key}: {e}") from None

    def read_weight(self) -> int:
        return self._split().weight

    def read_segment(self) -> Segment | None:
        return self._split().segment

    async def set_weight(self, weight: int, segment: Segment | None = None) -> None:
        if not 0 <= weight <= 100:
            raise ValueError(f"weight {weight} outside 0..100")
        if self.unmanaged():
            raise not_managed(KIND, self.namespace, self.config_map)
        text, flag = self._flag()
        self._split()  # what is there now must be readable: never overwrite a stranger's rules
        want = desired(weight, segment, self.names)
        if is_current(flag, want):
            return  # already there: no write at all
        doc = json.loads(text)  # a copy of its own: the parsed one is shared
        doc["flags"][self.names.flag] = with_split(flag, want)
        new_text = render(doc)
        if len(new_text.encode()) > MAX_DOCUMENT_BYTES:
            raise RouterError(
                f"{self._where} key {self.key}: with the split the document would be more "
                f"than the {MAX_DOCUMENT_BYTES} bytes a ConfigMap holds; move other flags "
                "to another ConfigMap"
            )
        path = f"/data/{self.key}"  # a ConfigMap key has no "/" or "~" to escape
        patch = [
            {"op": "test", "path": LABEL_PATH, "value": MANAGED_VALUE},
            {"op": "test", "path": path, "value": text},
            {"op": "replace", "path": path, "value": new_text},
        ]

        def write(api: client.ApiClient) -> Any:
            updated = client.CoreV1Api(api).patch_namespaced_config_map(
                self.config_map,
                self.namespace,
                patch,
                field_manager=FIELD_MANAGER,
                _content_type="application/json-patch+json",
            )
            return api.sanitize_for_serialization(updated)  # type: ignore[no-untyped-call]

        try:
            updated = await self._calls.call(write)
        except ApiException as e:
            if e.status == 404:
                raise RouterError(f"{self._where} not found") from e
            if e.status != 422:
                raise
            message = _status_message(e)
            if message == PATCH_NOT_APPLIED:
                # A `test` failed: the document or the label changed since it was watched.
                # The watch event that changed it wakes the Rollout, which asks again.
                raise RouterError(f"{self._where} changed while writing; retrying") from e
            raise RouterError(
                f"{self._where} key {self.key}: the API server refused the new document: "
                f"{message[:300]}"
            ) from e
        if isinstance(updated, dict):
            self._view.put(KIND, updated)


def _status_message(e: ApiException) -> str:
    """The ``message`` of the API server's Status in the error, else its body as text."""
    try:
        status = json.loads(e.body or "")
    except (TypeError, ValueError):
        return str(e.body or e.reason)
    return str(status.get("message", "")) if isinstance(status, dict) else str(status)
