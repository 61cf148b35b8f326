"""One pass over one Migration: observe its namespace's Rollouts from the store, ask the
engine (``engine/migration.py``), apply.

Writes, in this order, so a restart between any two is safe:

1. the status (guarded by resourceVersion): a rollback's log entry is recorded before any
   member is touched;
2. ``segue.dev/abort`` on the members the engine names, as merge patches of their
   annotations, on the urgent Kubernetes lane (they move traffic back); the engine names
   only members neither RollingBack nor RolledBack whose annotation is not already there,
   so a restart writes exactly the aborts still missing;
3. Events on the Migration; 4. removal of one-shot annotations (``segue.dev/approve``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from pydantic import ValidationError

from segue.api.migration import MigrationSpec, MigrationStatus
from segue.controller.kube import Json, is_status, urgent
from segue.controller.reconcile import PostEvent, RolloutWriter, merge_patch
from segue.controller.store import Store, newer
from segue.controller.workers import Worker
from segue.engine.annotations import ABORT
from segue.engine.migration import AbortMember, MigrationDecision, decide_migration
from segue.engine.types import ClearAnnotation, EmitEvent

log = logging.getLogger(__name__)

MAX_SLEEP_S: Final = 60.0
CONFLICT_WAIT_S: Final = 0.5
FINISHED: Final = frozenset({"RolledBack", "Failed"})


def migration_needs_work(body: Json) -> bool:
    """A Migration has work until a wave or migration scope rollback finished it (a
    Succeeded one still watches its members: one rolling back holds it again)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    if status.get("phase") not in FINISHED:
        return True
    if status.get("observedGeneration") != meta.get("generation"):
        return True
    return "segue.dev/approve" in (meta.get("annotations") or {})


class MigrationReconciler:
    def __init__(
        self,
        store: Store,
        migrations: RolloutWriter,
        rollouts: RolloutWriter,
        post_event: PostEvent,
    ) -> None:
        self.store = store
        self.migrations = migrations
        self.rollouts = rollouts
        self.post_event = post_event
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def reconcile(self, w: Worker) -> float | None:
        obj = w.obj
        meta = obj.get("metadata") or {}
        namespace, name = w.key
        if meta.get("deletionTimestamp"):
            return None
        if w.conflict_rv is not None:
            if meta.get("resourceVersion") == w.conflict_rv:
                fresh = await self.migrations.get(namespace, name)
                if fresh is None:
                    return None
                if newer(fresh, w.obj):
                    w.obj = obj = fresh
                    meta = obj.get("metadata") or {}
            w.conflict_rv = None
        try:
            spec = MigrationSpec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            log.warning("Migration %s/%s: spec does not parse: %s", namespace, name, e)
            return None
        raw_status: Json = dict(obj.get("status") or {})
        try:
            status = MigrationStatus.model_validate(raw_status) if raw_status else None
        except ValidationError as e:
            log.error("Migration %s/%s: status does not parse, left alone: %s", namespace, name, e)
            return None
        annotations = {
            k: str(v)
            for k, v in (meta.get("annotations") or {}).items()
            if str(k).startswith("segue.dev/")
        }
        decision = decide_migration(
            name,
            spec,
            status,
            self.store.members(namespace),
            self.clock(),
            annotations,
            generation=int(meta.get("generation", 0)),
        )
        if not await self._apply(w, raw_status, decision):
            return CONFLICT_WAIT_S
        if decision.requeue_after is not None:
            return min(MAX_SLEEP_S, decision.requeue_after)
        return None if decision.status.phase in FINISHED else MAX_SLEEP_S

    async def _apply(self, w: Worker, raw_status: Json, decision: MigrationDecision) -> bool:
        obj = w.obj
        meta = obj.get("metadata") or {}
        namespace, name = w.key
        aborts = [a for a in decision.actions if isinstance(a, AbortMember)]
        hurry = bool(aborts) or decision.status.phase == "RollingBack"
        with urgent() if hurry else contextlib.nullcontext():
            patch = merge_patch(raw_status, decision.status.to_wire())
            if patch:
                try:
                    updated = await self.migrations.patch_status(
                        namespace, name, patch, meta.get("resourceVersion")
                    )
                except Exception as e:
                    if is_status(e, 409):
                        w.conflict_rv = meta.get("resourceVersion")
                        return False
                    if is_status(e, 404):
                        return True
                    raise
                if updated and newer(updated, w.obj):
                    w.obj = updated
            for abort in aborts:
                # The value names the Migration and the log entry; the member's history
                # keeps it.
                await self.rollouts.patch_metadata(
                    namespace, abort.name, {"annotations": {ABORT: abort.value}}
                )
        for action in decision.actions:
            if isinstance(action, EmitEvent):
                self.post_event(obj, action.type, action.reason, action.message)
        clear = [a.key for a in decision.actions if isinstance(a, ClearAnnotation)]
        present = meta.get("annotations") or {}
        clear = [k for k in clear if k in present]
        if clear:
            updated_meta = await self.migrations.patch_metadata(
                namespace,
                name,
                {"annotations": {**dict.fromkeys(clear), "segue.dev/approved-by": None}},
            )
            if updated_meta is not None and newer(updated_meta, w.obj):
                w.obj = updated_meta
        return True
