"""One reconcile of one Rollout: read it, observe the cluster, ask the engine, apply.

Order of writes, chosen so a restart between any two of them is safe:
1. the status (the engine's new durable state, guarded by resourceVersion);
2. the router weight (idempotent; the engine asks again until it reads back);
3. Events; 4. removal of one-shot annotations (their handling is already in status).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from kubernetes import client
from pydantic import ValidationError

from segue.api.duration import parse_duration
from segue.api.spec import RolloutSpec
from segue.api.status import RolloutStatus
from segue.controller.gates import GateRunner, RoundScheduler
from segue.controller.kube import Json, Rollouts, is_status
from segue.controller.notifications import WebhookTargets
from segue.engine import ONE_SHOT, PAUSE, Decision, Observations, decide, invalid_spec
from segue.engine.types import ClearAnnotation, EmitEvent, SetWeight
from segue.traffic.base import Router, RouterError
from segue.traffic.registry import router_for
from segue.workloads.deployments import DeploymentMissing, Deployments, DeploymentState

log = logging.getLogger(__name__)

ANNOTATIONS: Final = (*ONE_SHOT, PAUSE)
# Phases in which analysis rounds run (traffic is, or may still be, split).
ANALYSED_PHASES: Final = frozenset({"Progressing", "Paused", "AwaitingApproval", "RollingBack"})
# Safety net: look again at least this often while a Rollout is active.
MAX_SLEEP_S: Final = 60.0
# Missing objects: retry after 2, 4, 8 ... seconds, at most this.
MAX_BACKOFF_S: Final = 60.0


class PostEvent(Protocol):
    def __call__(self, obj: Json, type_: str, reason: str, message: str) -> None: ...


class Hooks(Protocol):
    """Side channels (metrics, notifications) told about every applied decision."""

    def decided(
        self, namespace: str, name: str, old: RolloutStatus | None, new: RolloutStatus, obj: Json
    ) -> None: ...


@dataclass
class Runtime:
    """What one Rollout's loop keeps in memory. Nothing here is durable state: after a
    restart, a fresh Runtime only means an analysis round runs a little sooner."""

    rounds: RoundScheduler = field(default_factory=RoundScheduler)
    missing_streak: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def merge_patch(old: Json, new: Json) -> Json:
    """The JSON merge patch turning ``old`` into ``new`` (explicit nulls remove keys)."""
    patch: Json = {k: None for k in old.keys() - new.keys()}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif before != value:
            patch[key] = value
    return patch


def revision(spec: RolloutSpec, new_deployment: DeploymentState | None) -> str:
    """What "the new version" is: its spec entry and its Deployment's pod template."""
    template = new_deployment.template_hash if new_deployment else None
    new = spec.new.model_dump(by_alias=True, exclude_none=True, mode="json")
    blob = json.dumps([new, template], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class Reconciler:
    def __init__(
        self,
        api: client.ApiClient,
        gates: GateRunner,
        post_event: PostEvent,
        hooks: Sequence[Hooks] = (),
        targets: WebhookTargets | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.targets = targets
        self.api = api
        self.rollouts = Rollouts(api)
        self.gates = gates
        self.post_event = post_event
        self.hooks = list(hooks)
        self.clock = clock
        self._apps = client.AppsV1Api(api)

    async def reconcile(self, namespace: str, name: str, rt: Runtime) -> float | None:
        """One pass. Returns seconds until the next pass is needed (None: only on change)."""
        obj = await self.rollouts.get(namespace, name)
        if obj is None or obj.get("metadata", {}).get("deletionTimestamp"):
            rt.rounds.cancel()
            return None
        meta = obj.get("metadata", {})
        generation = int(meta.get("generation", 0))
        raw_status: Json = obj.get("status") or {}
        status = _parse_status(raw_status, namespace, name)
        try:
            spec = RolloutSpec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            decision = invalid_spec(
                status, now=self.clock(), generation=generation, message=_errors(e)
            )
            await self._apply(obj, raw_status, status, decision, router=None)
            return None

        if self.targets is not None:
            for problem in await self.targets.refresh(namespace, name, spec):
                self.post_event(obj, "Warning", "NotificationConfig", problem)
        router = router_for(self.api, namespace, spec)
        obs, missing_objects = await self._observe(obj, spec, status, router, rt)
        decision = decide(spec, status, obs)
        if not await self._apply(obj, raw_status, status, decision, router):
            return 0.2  # the Rollout changed under us: decide again on fresh state
        return self._next(decision, spec, rt, missing_objects)

    # -- observing -------------------------------------------------------------------

    async def _observe(
        self,
        obj: Json,
        spec: RolloutSpec,
        status: RolloutStatus | None,
        router: Router,
        rt: Runtime,
    ) -> tuple[Observations, bool]:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        deployments = Deployments(self.api, namespace)
        missing: list[str] = []
        states: dict[str, DeploymentState] = {}
        for side, deployment in (("legacy", spec.legacy.deployment), ("new", spec.new.deployment)):
            try:
                states[side] = await deployments.read(deployment)
            except DeploymentMissing:
                missing.append(f"Deployment {namespace}/{deployment} ({side})")
        router_weight: int | None = None
        if not missing:  # reading the weight also verifies the routing object
            try:
                router_weight = await router.read_weight()
            except RouterError as e:
                missing.append(str(e))
        rt.missing_streak = rt.missing_streak + 1 if missing else 0

        annotations = meta.get("annotations") or {}
        phase = status.phase if status else None
        weight = status.weight if status else 0
        if router_weight is not None:
            weight = router_weight
        gates = None
        if spec.analysis is not None and phase in ANALYSED_PHASES:
            rt.rounds.collect()
            if weight > 0:
                loop = asyncio.get_running_loop()
                interval = parse_duration(spec.analysis.interval).total_seconds()
                rt.rounds.maybe_start(
                    loop.time(),
                    interval,
                    lambda: self._start_round(namespace, name, spec, weight, rt),
                )
            gates = rt.rounds.latest
        return (
            Observations(
                now=self.clock(),
                generation=int(meta.get("generation", 0)),
                new_revision=revision(spec, states.get("new")),
                router_weight=router_weight,
                legacy_ready=states["legacy"].ready if "legacy" in states else 0,
                new_ready=states["new"].ready if "new" in states else 0,
                router_manages_capacity=router.manages_capacity,
                annotations={k: str(annotations[k]) for k in ANNOTATIONS if k in annotations},
                missing=tuple(missing),
                # dependsOn only gates the start: no reads once the Rollout is under way.
                dependencies_pending=(
                    await self._pending_dependencies(namespace, spec)
                    if phase in (None, "Pending", "Waiting")
                    else ()
                ),
                gates=gates,
            ),
            bool(missing),
        )

    def _start_round(
        self, namespace: str, name: str, spec: RolloutSpec, weight: int, rt: Runtime
    ) -> asyncio.Task[Any]:
        task = asyncio.create_task(self.gates.run(namespace, name, spec, weight))
        task.add_done_callback(lambda _: rt.wake.set())
        return task

    async def _pending_dependencies(self, namespace: str, spec: RolloutSpec) -> tuple[str, ...]:
        pending: list[str] = []
        for dep in spec.depends_on or []:
            other = await self.rollouts.get(namespace, dep.name)
            phase = ((other or {}).get("status") or {}).get("phase")
            if other is None:
                pending.append(f"{dep.name} (not found)")
            elif phase != "Succeeded":
                pending.append(f"{dep.name} ({phase or 'Pending'})")
        return tuple(pending)

    # -- applying --------------------------------------------------------------------

    async def _apply(
        self,
        obj: Json,
        raw_status: Json,
        old: RolloutStatus | None,
        decision: Decision,
        router: Router | None,
    ) -> bool:
        """Apply a decision in the safe order. False when the status write lost a race."""
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        new_wire = decision.status.to_wire()
        patch = merge_patch(raw_status, new_wire)
        if patch:
            try:
                await self.rollouts.patch_status(
                    namespace, name, patch, meta.get("resourceVersion")
                )
            except Exception as e:
                if is_status(e, 409):
                    return False
                raise
        for action in decision.actions:
            if isinstance(action, SetWeight) and router is not None:
                try:
                    await router.set_weight(action.weight)
                except RouterError as e:
                    self.post_event(obj, "Warning", "RouterError", str(e))
        for action in decision.actions:
            if isinstance(action, EmitEvent):
                self.post_event(obj, action.type, action.reason, action.message)
        clear = [a.key for a in decision.actions if isinstance(a, ClearAnnotation)]
        await self.rollouts.remove_annotations(namespace, name, clear)
        for hook in self.hooks:
            try:
                hook.decided(namespace, name, old, decision.status, obj)
            except Exception:  # metrics or notifications never stop a rollout
                log.exception("hook %r failed", hook)
        return True

    def _next(
        self, decision: Decision, spec: RolloutSpec, rt: Runtime, missing: bool
    ) -> float | None:
        waits = [MAX_SLEEP_S]
        if decision.requeue_after is not None:
            waits.append(decision.requeue_after)
        if missing:
            waits.append(min(MAX_BACKOFF_S, 2.0 ** min(rt.missing_streak, 6)))
        phase = decision.status.phase
        if spec.analysis is not None and phase in ANALYSED_PHASES:
            waits.append(rt.rounds.due_in(asyncio.get_running_loop().time()))
        if phase in ("Succeeded", "RolledBack", "Failed") and not missing:
            rt.rounds.cancel()
            return None
        return max(0.05, min(waits))


def _parse_status(raw: Json, namespace: str, name: str) -> RolloutStatus | None:
    if not raw:
        return None
    try:
        return RolloutStatus.model_validate(raw)
    except ValidationError as e:
        raise BadStatus(f"status of Rollout {namespace}/{name} does not parse: {e}") from e


class BadStatus(Exception):
    """The status was edited by something other than Segue; acting on it could flip
    traffic, so the Rollout is left alone and the problem reported."""


def _errors(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"spec.{loc}: {err['msg']}" if loc else f"spec: {err['msg']}")
    return "; ".join(parts)
