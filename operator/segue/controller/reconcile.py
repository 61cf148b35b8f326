"""One pass over one Rollout: observe from the watched state, ask the engine, apply.

A pass reads nothing from the API server: the Rollout, its Deployments and its route come
from watch streams (``store.py``). It writes only what the decision changes, in this order,
chosen so a restart between any two writes is safe:

1. the status (the engine's new durable state, guarded by resourceVersion);
2. Segue's finalizer, before any traffic moves;
3. the router weight (idempotent; the engine asks again until it reads back);
4. Events; 5. removal of one-shot annotations (their handling is already in status);
6. release of the finalizer, when the engine decides a deleted Rollout may go.

Passes of Rollouts that roll back, abort or are deleted use the urgent Kubernetes lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from pydantic import ValidationError

from segue.analysis.providers.base import Provider
from segue.api.duration import parse_duration
from segue.api.phases import ANALYSED, ROLLED_BACK, STEPPING, TERMINAL, event_type
from segue.api.provider import PROVIDER_KIND
from segue.api.routing import Segment
from segue.api.spec import RolloutSpec, Traffic, Workload
from segue.api.status import RolloutStatus
from segue.controller.kube import Json, is_status, moving_traffic, urgent
from segue.controller.notifications import WebhookTargets
from segue.controller.resolution import describe, unresolvable_gates
from segue.controller.store import Store, newer
from segue.controller.workers import FINALIZER, Worker, slim
from segue.engine import (
    OBSERVED,
    Decision,
    GateRound,
    Observations,
    decide,
    invalid_spec,
)
from segue.engine.annotations import ABORT
from segue.engine.steps import WAITING_FOR_ROUTER
from segue.engine.types import (
    ClearAnnotation,
    EmitEvent,
    PhaseChanged,
    ReleaseFinalizer,
    SetWeight,
)
from segue.traffic.base import Ref, Router, RouterError
from segue.traffic.registry import RouterDisabled
from segue.workloads.deployments import DeploymentState

log = logging.getLogger(__name__)

# The steering annotations, their companions (who set them) and who last edited the plan.
ANNOTATIONS: Final = OBSERVED
# Safety net: look again at least this often while a Rollout is active.
MAX_SLEEP_S: Final = 60.0
# After a lost race (409), wait this long for the watch to bring the newer object.
CONFLICT_WAIT_S: Final = 0.5
# A round a hold's end needs starts this long before it (the queries' time to answer).
ROUND_LEAD_S: Final = 1.0
# A round that changes no verdict or streak, only these readings of a gate, is not written
# on its own: the readings go with the next write that changes something.
# The fields of a gate's status that a passing round refreshes without deciding anything.
READINGS: Final = frozenset({"value", "legacyValue", "lastEvaluated", "message"})


class PostEvent(Protocol):
    def __call__(self, obj: Json, type_: str, reason: str, message: str) -> None: ...


class Hooks(Protocol):
    """Side channels (metrics, notifications) told about every applied decision."""

    def decided(
        self,
        namespace: str,
        name: str,
        old: RolloutStatus | None,
        new: RolloutStatus,
        obj: Json,
        changes: Sequence[PhaseChanged],
    ) -> None: ...


class Watch(Protocol):
    def __call__(self, worker: Worker, refs: list[Ref]) -> None: ...


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


@dataclass
class Routing:
    """The parts of a spec that move traffic; parsed on their own, so an abort can still
    move traffic when another part of the spec does not parse."""

    traffic: Traffic
    legacy: Workload
    new: Workload

    @classmethod
    def parse(cls, raw: Json) -> Routing | None:
        try:
            return cls(
                Traffic.model_validate(raw.get("traffic") or {}),
                Workload.model_validate(raw.get("legacy") or {}),
                Workload.model_validate(raw.get("new") or {}),
            )
        except ValidationError:
            return None


class RolloutWriter(Protocol):
    """The writes a pass makes to its Rollout (``kube.Rollouts``)."""

    async def patch_status(
        self, namespace: str, name: str, status: Json, resource_version: str | None
    ) -> Json: ...

    async def patch_metadata(self, namespace: str, name: str, metadata: Json) -> Json | None: ...

    async def json_patch(self, namespace: str, name: str, ops: list[Json]) -> Json | None: ...

    async def get(self, namespace: str, name: str) -> Json | None: ...


# Reads a Deployment now, past the store (None: it does not exist).
ReadDeployment = Callable[[str, str], Awaitable[Json | None]]


class GateRounds(Protocol):
    """Runs one analysis round (``gates.GateRunner``), and says beforehand whether the
    Rollout's provider can be used."""

    async def run(self, namespace: str, name: str, spec: RolloutSpec, weight: int) -> GateRound: ...

    def refusal(self, spec: RolloutSpec) -> str | None:
        """A provider section the operator may not use (an inline address it does not
        allow), as a message naming the field."""
        ...

    def provider_problem(self, spec: RolloutSpec) -> str | None:
        """The named MetricProvider is missing or unusable, as a message naming the field."""
        ...

    def provider(self, spec: RolloutSpec) -> Provider:
        """The metric provider that plans and runs the Rollout's gates."""
        ...


# (namespace, traffic, legacy, new, the weight status records as asked) -> the router.
RouterFactory = Callable[[str, Traffic, Workload, Workload, int | None], Router]


def _asked(status: RolloutStatus | None) -> int | None:
    """The weight the status records as asked of the router; None before the first pass."""
    return None if status is None or status.phase is None else status.target_weight


class Reconciler:
    def __init__(
        self,
        store: Store,
        rollouts: RolloutWriter,
        routers: RouterFactory,
        gates: GateRounds,
        post_event: PostEvent,
        watch: Watch,
        hooks: Sequence[Hooks] = (),
        targets: WebhookTargets | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        read_deployment: ReadDeployment | None = None,
    ) -> None:
        self.store = store
        self.read_deployment = read_deployment
        self.rollouts = rollouts
        self.routers = routers
        self.gates = gates
        self.post_event = post_event
        self.watch = watch
        self.hooks = list(hooks)
        self.targets = targets
        self.clock = clock

    async def reconcile(self, w: Worker) -> float | None:
        """One pass. Returns seconds until the next pass is needed (None: only on change)."""
        if w.conflict_rv is not None:
            if (w.obj.get("metadata") or {}).get("resourceVersion") == w.conflict_rv:
                fresh = await self.rollouts.get(*w.key)
                if fresh is None:
                    return None
                w.update(fresh)
            w.conflict_rv = None
        return await self._pass(w, w.obj)

    async def _pass(self, w: Worker, obj: Json) -> float | None:
        namespace, name = w.key
        raw_status: Json = obj.get("status") or {}
        status = _parse_status(raw_status, namespace, name)
        raw_spec: Json = obj.get("spec") or {}
        # The spec changes only with the generation: a pass at the same one reuses the
        # parsed spec and what planning its gates found.
        raw_generation = (obj.get("metadata") or {}).get("generation")
        generation = raw_generation if isinstance(raw_generation, int) else None
        if w.parsed is not None and w.parsed[0] == generation:
            spec = w.parsed[1]
        else:
            try:
                spec = RolloutSpec.model_validate(raw_spec)
            except ValidationError as e:
                return await self._invalid(
                    w, obj, raw_status, status, Routing.parse(raw_spec), _errors(e)
                )
            if generation is not None:
                w.parsed = (generation, spec)
        routing = Routing(spec.traffic, spec.legacy, spec.new)
        # A provider section the operator may not use (an address it may not query) is a spec
        # it cannot run: Failed, before any traffic moves, and nothing is sent there.
        refusal = self.gates.refusal(spec)
        if refusal is not None:
            return await self._invalid(w, obj, raw_status, status, routing, refusal)
        # Gates no round could run make the spec invalid too, before any traffic moves.
        provider = self.gates.provider(spec)
        if w.planned is not None and w.planned[0] == (generation, provider):
            problems = w.planned[1]
        else:
            problems = unresolvable_gates(spec, namespace, name, provider)
            if generation is not None:
                w.planned = ((generation, provider), problems)
        if problems:
            return await self._invalid(w, obj, raw_status, status, routing, describe(problems))

        try:
            router = self.routers(namespace, spec.traffic, spec.legacy, spec.new, _asked(status))
        except RouterDisabled as e:
            return await self._invalid(w, obj, raw_status, status, None, str(e))
        if self.targets is not None:
            for problem in await self.targets.refresh(namespace, name, spec, obj):
                self.post_event(obj, "Warning", "NotificationConfig", problem)
        refs = _refs(namespace, spec.legacy, spec.new, router)
        refs += [("Rollout", namespace, dep.name) for dep in spec.depends_on or []]
        if spec.analysis is not None and spec.analysis.provider_ref is not None:
            refs.append((PROVIDER_KIND, "", spec.analysis.provider_ref.name))
        self.watch(w, refs)
        obs = self._observations(obj, routing, router, spec, status, w)
        decision = decide(spec, status, obs)
        if _leaves_success(status, decision) and await self._legacy_gone(namespace, spec):
            obs = self._observations(obj, routing, router, spec, status, w)
            decision = decide(spec, status, obs)
        decision = await self._raise_first(w, obj, routing, router, spec, raw_status, decision)
        if not await self._apply(w, raw_status, status, decision, router):
            return CONFLICT_WAIT_S
        return self._next(decision, spec, w)

    async def _invalid(
        self,
        w: Worker,
        obj: Json,
        raw_status: Json,
        status: RolloutStatus | None,
        routing: Routing | None,
        message: str,
    ) -> float | None:
        """A spec that cannot run: Failed with ``message``; an abort still moves traffic
        back when ``routing`` (the parts that move traffic) could be parsed."""
        namespace = w.key[0]
        router = None
        if routing is not None:
            try:
                router = self.routers(
                    namespace, routing.traffic, routing.legacy, routing.new, _asked(status)
                )
            except RouterDisabled:
                routing = None
            else:
                self.watch(w, _refs(namespace, routing.legacy, routing.new, router))
        obs = self._observations(obj, routing, router, None, status, w)
        decision = invalid_spec(status, obs, message=message, routable=router is not None)
        if not await self._apply(w, raw_status, status, decision, router):
            return CONFLICT_WAIT_S
        return self._next(decision, None, w)

    # -- observing -------------------------------------------------------------------

    async def _legacy_gone(self, namespace: str, spec: RolloutSpec) -> bool:
        """Whether the legacy Deployment, which the store still has, is gone: read once past
        the store, and forgotten there if so. A Succeeded Rollout that starts rolling back
        (an abort after success) sends traffic to it, and the cleanup after success deletes
        it: the watch may not have said so yet, and traffic must not go to pods on their
        way out. Asked again without it, the engine refuses the abort with the reason
        (``engine/annotations.py``). If the read fails, the store's answer stands."""
        if self.read_deployment is None:
            return False
        name = spec.legacy.deployment
        try:
            with urgent():  # the rollback waits for this read: it goes first, as it would
                body = await self.read_deployment(namespace, name)
        except Exception as e:  # the store's answer stands, as without this read
            log.debug("reading Deployment %s/%s failed: %s", namespace, name, e)
            return False
        if body is not None:
            return False
        self.store.drop("Deployment", namespace, name)
        return True

    def _observations(
        self,
        obj: Json,
        routing: Routing | None,
        router: Router | None,
        spec: RolloutSpec | None,
        status: RolloutStatus | None,
        w: Worker,
    ) -> Observations:
        meta = obj["metadata"]
        namespace, name = w.key
        missing: list[str] = []
        legacy = new = None
        if routing is not None:
            legacy = self.store.deployment(namespace, routing.legacy.deployment)
            new = self.store.deployment(namespace, routing.new.deployment)
            if legacy is None:
                missing.append(f"Deployment {namespace}/{routing.legacy.deployment} (legacy)")
            if new is None:
                missing.append(f"Deployment {namespace}/{routing.new.deployment} (new)")
        router_weight: int | None = None
        router_segment: Segment | None = None
        router_missing = False
        unmanaged: list[Ref] = []
        if router is not None:
            try:
                router_weight = router.read_weight()
                router_segment = router.read_segment()
            except RouterError as e:
                router_missing = True
                if str(e) not in " ".join(missing):
                    missing.append(str(e))
            unmanaged = router.unmanaged()

        annotations = meta.get("annotations") or {}
        phase = status.phase if status else None
        if spec is not None and phase in (None, "Pending", "Waiting"):
            # Before traffic moves, a missing provider holds the start (Stalled, a Warning
            # Event); once under way its rounds report it, so a rollback is never held.
            problem = self.gates.provider_problem(spec)
            if problem is not None:
                missing.append(problem)
        weight = status.weight if status else 0
        if router_weight is not None:
            weight = router_weight
        gates = None
        if spec is not None and spec.analysis is not None and phase in ANALYSED:
            w.rounds.collect()
            # A segment on the new version is traffic to judge, even at 0%.
            if weight > 0 or router_segment is not None:
                loop = asyncio.get_running_loop()
                interval = parse_duration(spec.analysis.interval).total_seconds()
                w.rounds.maybe_start(
                    loop.time(),
                    interval,
                    lambda: self._start_round(namespace, name, spec, weight, w),
                )
            gates = w.rounds.latest
        deleting_since = _timestamp(meta.get("deletionTimestamp"))
        dependencies: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        gate = None
        if phase in (None, "Pending", "Waiting"):
            if spec is not None:
                dependencies = self._dependencies(namespace, spec)
            # A Migration only gates the start, like dependsOn.
            gate = self.store.migration_gate(namespace, name)
        if gate is not None and gate.stalled:
            dependencies = (dependencies[0], (*dependencies[1], gate.message))
        return Observations(
            now=self.clock(),
            generation=int(meta.get("generation", 0)),
            new_revision=revision(spec, new) if spec is not None else "",
            router_weight=router_weight,
            legacy_ready=legacy.ready if legacy else 0,
            new_ready=new.ready if new else 0,
            legacy_desired=legacy.desired if legacy else 0,
            router_manages_capacity=router.manages_capacity if router else False,
            router_segment=router_segment,
            annotations={k: str(annotations[k]) for k in ANNOTATIONS if k in annotations},
            missing=tuple(missing),
            new_missing=routing is not None and new is None,
            legacy_missing=routing is not None and legacy is None,
            router_missing=router_missing,
            unmanaged=tuple(unmanaged),
            # dependsOn only gates the start: no lookups once the Rollout is under way.
            dependencies_pending=dependencies[0],
            dependencies_rolled_back=dependencies[1],
            gates=gates,
            migration_waiting=gate.message if gate and not gate.stalled else None,
            deleting=deleting_since is not None,
            deleting_since=deleting_since,
        )

    def _start_round(
        self, namespace: str, name: str, spec: RolloutSpec, weight: int, w: Worker
    ) -> asyncio.Task[Any]:
        task = asyncio.create_task(self.gates.run(namespace, name, spec, weight))
        task.add_done_callback(lambda _: w.wake.set())
        return task

    def _dependencies(
        self, namespace: str, spec: RolloutSpec
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """dependsOn Rollouts not yet Succeeded, and those that rolled back instead."""
        pending: list[str] = []
        rolled_back: list[str] = []
        for dep in spec.depends_on or []:
            known, phase = self.store.rollout_phase(namespace, dep.name)
            if not known:
                pending.append(f"{dep.name} (not found)")
            elif phase in ROLLED_BACK:
                rolled_back.append(f"Rollout {dep.name} is {phase}")
            elif phase != "Succeeded":
                pending.append(f"{dep.name} ({phase or 'Pending'})")
        return tuple(pending), tuple(rolled_back)

    # -- applying --------------------------------------------------------------------

    async def _apply(
        self,
        w: Worker,
        raw_status: Json,
        old: RolloutStatus | None,
        decision: Decision,
        router: Router | None,
    ) -> bool:
        """Apply a decision in the safe order. False when the status write lost a race."""
        obj = w.obj
        meta = obj["metadata"]
        namespace, name = w.key
        set_weight = next((a for a in decision.actions if isinstance(a, SetWeight)), None)
        # Traffic moving back towards legacy goes through the urgent lane.
        hurry = set_weight is not None and set_weight.weight < decision.status.weight
        # A weight the status already records (the engine asking again until the router
        # reads it) may be written before the status: nothing new would be lost.
        recorded = (
            set_weight is not None
            and raw_status.get("targetWeight") == set_weight.weight
            and _segment_key(raw_status.get("segment")) == _segment_key(set_weight.segment)
        )
        # An abort or a deletion pulls traffic back before its status is written: what
        # asked for it (the segue.dev/abort annotation, the deletionTimestamp) stays on the
        # object until that status is written, so a restart in between asks again.
        asked_on_object = ABORT in (meta.get("annotations") or {}) or bool(
            meta.get("deletionTimestamp")
        )
        first = recorded or (hurry and asked_on_object)
        with urgent() if hurry else contextlib.nullcontext():
            if first:
                await self._set_weight(obj, router, set_weight)
            wire = decision.status.to_wire()
            patch = merge_patch(raw_status, wire)
            if patch and _decides_nothing(raw_status, wire, patch):
                patch = {}  # nothing decided; the readings wait for the next write
            if patch:
                try:
                    updated = await self.rollouts.patch_status(
                        namespace, name, patch, meta.get("resourceVersion")
                    )
                except Exception as e:
                    if is_status(e, 409):
                        w.conflict_rv = meta.get("resourceVersion")
                        return False
                    if is_status(e, 404):
                        return True  # gone; its DELETED event stops the worker
                    raise
                self._take(w, updated)
            release = any(isinstance(a, ReleaseFinalizer) for a in decision.actions)
            if not release and not meta.get("deletionTimestamp"):
                await self._ensure_finalizer(w)
            if not first:
                await self._set_weight(obj, router, set_weight)
        changes: list[PhaseChanged] = []
        for i, action in enumerate(decision.actions):
            if isinstance(action, EmitEvent):
                if not _told_by_next(action, decision.actions[i + 1 :]):
                    self.post_event(obj, action.type, action.reason, action.message)
            elif isinstance(action, PhaseChanged):
                changes.append(action)
                if _left_at_once(action, decision.actions[i + 1 :]):
                    continue
                kind = event_type(action.new, action.paused_reason)
                self.post_event(obj, kind, action.new, action.message)
        clear = [a.key for a in decision.actions if isinstance(a, ClearAnnotation)]
        present = meta.get("annotations") or {}
        clear = [k for k in clear if k in present]
        if clear:
            await self._clear_annotations(w, clear)
        if release:
            await self._release_finalizer(w)
        for hook in self.hooks:
            try:
                hook.decided(namespace, name, old, decision.status, obj, changes)
            except Exception:  # metrics or notifications never stop a rollout
                log.exception("hook %r failed", hook)
        return True

    async def _raise_first(
        self,
        w: Worker,
        obj: Json,
        routing: Routing,
        router: Router,
        spec: RolloutSpec,
        raw_status: Json,
        decision: Decision,
    ) -> Decision:
        """Raising the new version's share: the router first, then one status write.

        Moving traffic up may go before the status records it: a crash in between leaves
        the router above the recorded target, and the next pass lowers it back to the
        target (the safe direction) before asking again. When the router reads the new
        weight at once (a route's weights are written atomically), the engine confirms the
        step in the same pass, so the step costs one status write, one router write and one
        Event. Lowering always records the status first (see ``_apply``)."""
        raise_ = next((a for a in decision.actions if isinstance(a, SetWeight)), None)
        if (
            raise_ is None
            or raise_.weight <= decision.status.weight
            or raw_status.get("targetWeight") == raise_.weight
            or decision.status.phase not in STEPPING
            or FINALIZER not in ((obj.get("metadata") or {}).get("finalizers") or [])
        ):
            return decision
        await self._set_weight(obj, router, raise_)
        current = decision.status
        obs = self._observations(obj, routing, router, spec, current, w)
        if obs.router_weight != raise_.weight:
            return decision  # the router gets there later (pods to start): the usual order
        second = decide(spec, current, obs)
        kept = tuple(a for a in decision.actions if not isinstance(a, SetWeight | ClearAnnotation))
        return Decision(
            status=second.status,
            actions=kept + second.actions,
            requeue_after=second.requeue_after,
        )

    async def _set_weight(self, obj: Json, router: Router | None, action: SetWeight | None) -> None:
        if action is None or router is None:
            return
        try:
            with moving_traffic():
                await router.set_weight(action.weight, action.segment)
        except RouterError as e:
            self.post_event(obj, "Warning", "RouterError", str(e))

    def _take(self, w: Worker, updated: Json) -> None:
        if updated and newer(updated, w.obj):
            w.obj = slim(updated)

    async def _ensure_finalizer(self, w: Worker) -> None:
        meta = w.obj.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            return
        ops: list[Json] = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": meta.get("resourceVersion"),
            }
        ]
        if finalizers:
            ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
        else:
            ops.append({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
        try:
            updated = await self.rollouts.json_patch(*w.key, ops)
        except Exception as e:
            if is_status(e, 409, 422):
                return  # changed meanwhile: the next pass adds it on the newer object
            raise
        if updated is not None:
            self._take(w, updated)

    async def _clear_annotations(self, w: Worker, keys: list[str]) -> None:
        """Remove handled one-shot annotations from the object this pass decided on (guarded
        by its resourceVersion): a value set meanwhile (a second approval) stays for the
        next pass. The guard is the version, not a ``test`` of each value: the API server
        compares JSON text, so an escaped non-ASCII value would never match."""
        rv = (w.obj.get("metadata") or {}).get("resourceVersion")
        ops: list[Json] = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}]
        for key in keys:
            path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
            ops.append({"op": "remove", "path": path})
        try:
            updated = await self.rollouts.json_patch(*w.key, ops)
        except Exception as e:
            if is_status(e, 409, 422):
                return  # changed meanwhile: the next pass sees the new values
            raise
        if updated is not None:
            self._take(w, updated)

    async def _release_finalizer(self, w: Worker) -> None:
        finalizers = list((w.obj.get("metadata") or {}).get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        i = finalizers.index(FINALIZER)
        ops: list[Json] = [
            {"op": "test", "path": f"/metadata/finalizers/{i}", "value": FINALIZER},
            {"op": "remove", "path": f"/metadata/finalizers/{i}"},
        ]
        try:
            updated = await self.rollouts.json_patch(*w.key, ops)
        except Exception as e:
            if is_status(e, 409, 422):
                return  # the list changed: the next pass removes it from the newer one
            raise
        if updated is not None:
            self._take(w, updated)

    def _next(self, decision: Decision, spec: RolloutSpec | None, w: Worker) -> float | None:
        phase = decision.status.phase
        deleting = bool((w.obj.get("metadata") or {}).get("deletionTimestamp"))
        if phase in TERMINAL and not deleting:
            w.rounds.cancel()
            return None
        waits = [MAX_SLEEP_S]
        if decision.requeue_after is not None:
            waits.append(decision.requeue_after)
        if spec is not None and spec.analysis is not None and phase in ANALYSED:
            now = asyncio.get_running_loop().time()
            wait = decision.requeue_after
            if wait is not None and not _round_within_step(w.rounds.latest, decision.status):
                # Ending a hold needs a passing round evaluated after the step started: run
                # it just before the hold ends rather than wait for the interval.
                w.rounds.due_by(now + max(0.0, wait - ROUND_LEAD_S))
            waits.append(w.rounds.due_in(now))
        return max(0.01, min(waits))


def _leaves_success(status: RolloutStatus | None, decision: Decision) -> bool:
    """Whether the decision takes a Succeeded Rollout back towards legacy."""
    was = status.phase if status is not None else None
    return was == "Succeeded" and decision.status.phase == "RollingBack"


def _readings_only(old: Json, new: Json, patch: Json) -> bool:
    """Whether a status write would only refresh gate readings (values, times, messages)
    while every verdict, streak and limit stays. Such a write decides nothing: the round
    itself (in memory) is what steps wait for, and a restart runs a new one. Skipping it
    makes a Rollout that waits with passing gates cost no write at all; its live readings
    are the operator's metrics (segue_gate_value), and status shows those of the last
    write, with the time they were taken (lastEvaluated)."""
    if set(patch) != {"gates"}:
        return False
    before, after = old.get("gates") or [], new.get("gates") or []
    if not before or len(before) != len(after):
        return False
    for a, b in zip(before, after, strict=True):
        if not isinstance(a, dict) or not isinstance(b, dict):
            return False
        if {k: v for k, v in a.items() if k not in READINGS} != {
            k: v for k, v in b.items() if k not in READINGS
        }:
            return False
        if a.get("lastEvaluated") is None:
            return False  # the first readings of a gate are written
    return True


def _told_by_next(event: EmitEvent, later: Sequence[object]) -> bool:
    """Whether ``event`` confirms a weight that the same pass's ``Succeeded`` reports in
    the next breath ("all traffic on the new version"); status history keeps both."""
    return event.reason == "WeightSet" and any(
        isinstance(a, PhaseChanged) and a.new == "Succeeded" for a in later
    )


def _left_at_once(change: PhaseChanged, later: Sequence[object]) -> bool:
    """Whether ``change`` entered Pending and the same pass left it (a new Rollout that
    starts at once): its Event would only precede the next one by nothing. Status history
    and the notification hooks keep both."""
    return change.new == "Pending" and any(
        isinstance(a, PhaseChanged) and a.old == "Pending" for a in later
    )


def _decides_nothing(old: Json, new: Json, patch: Json) -> bool:
    return _readings_only(old, new, patch) or _router_reading_only(old, new, patch)


# What a pass that only sees the router move towards the weight asked for changes.
_ROUTER_READING: Final = frozenset({"weight", "message", "conditions"})


def _router_reading_only(old: Json, new: Json, patch: Json) -> bool:
    """Whether a status write would only follow the router's reading while a step waits
    for the router to report the weight asked for (the replicas router reads a share of
    ready pods, which moves with every pod). Such a write decides nothing: the weight asked
    for is written, and the pass that reads it back writes the confirmation. Skipping it
    saves the replicas router several writes per step; the live reading is the operator's
    segue_rollout_weight, and status shows the reading of the last write."""
    if not set(patch) <= _ROUTER_READING or "weight" not in patch:
        return False
    if old.get("phase") != "Progressing" or new.get("phase") != "Progressing":
        return False
    before, after = old.get("conditions") or [], new.get("conditions") or []
    if len(before) != len(after):
        return False
    waiting = False
    for a, b in zip(before, after, strict=True):
        if not isinstance(a, dict) or not isinstance(b, dict):
            return False
        if {k: v for k, v in a.items() if k != "message"} != {
            k: v for k, v in b.items() if k != "message"
        }:
            return False
        waiting = waiting or b.get("reason") == WAITING_FOR_ROUTER
    return waiting


def _round_within_step(latest: GateRound | None, status: RolloutStatus) -> bool:
    """Whether the latest analysis round was evaluated after the current step started."""
    if latest is None:
        return False
    started = status.step_started_at
    return started is None or latest.evaluated_at >= started


def _refs(namespace: str, legacy: Workload, new: Workload, router: Router | None) -> list[Ref]:
    refs: list[Ref] = [
        ("Deployment", namespace, legacy.deployment),
        ("Deployment", namespace, new.deployment),
    ]
    if router is not None:
        refs.extend(router.watches())
    return refs


def _timestamp(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


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


def _segment_key(segment: Segment | Json | None) -> tuple[str, tuple[str, ...]] | None:
    """A segment's identity, from the model or from the status as written."""
    if segment is None:
        return None
    if isinstance(segment, Segment):
        return segment.key()
    return str(segment.get("header", "")), tuple(sorted(map(str, segment.get("values") or [])))
