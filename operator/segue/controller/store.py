"""What the operator knows of the cluster, kept current by watch streams.

Segue's informers (``informer.py``) watch Rollouts, Migrations, Deployments and the kinds of
the enabled routers (HTTPRoutes, ...; each router says what to keep of them) in the
operator's scope, and MetricProviders (cluster-scoped) cluster-wide. No Rollout is handled
before every kind is listed (a Rollout is never judged against a Deployment that merely has
not been listed yet); the store keeps a small summary per object, not the whole object. A
pass reads from this store and makes no GET request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from segue.api.migration import MIGRATION_KIND, MigrationSpec
from segue.api.provider import PROVIDER_KIND, MetricProviderSpec
from segue.api.status import HistoryEntry
from segue.engine.annotations import ABORT
from segue.engine.migration import MemberView, owners, resolve
from segue.traffic.catalog import ROUTERS
from segue.workloads.deployments import DeploymentState

Json = dict[str, Any]
Key = tuple[str, str]


def resource_version(obj: Json) -> int | None:
    """The object's resourceVersion as a number, when it is one (etcd revisions are)."""
    value = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def newer(candidate: Json, current: Json | None) -> bool:
    """Whether ``candidate`` is at least as new as ``current``. Our own writes return the
    object before its watch event arrives; an event older than what a write returned must
    not roll the cached copy back."""
    if current is None:
        return True
    a, b = resource_version(candidate), resource_version(current)
    if a is None or b is None:
        return True
    return a >= b


# History entries of a Rollout kept for its Migration (the trigger of a rollback).
HISTORY_TAIL: Final = 8


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def member_view(body: Json) -> MemberView:
    """What a Migration reads of a Rollout: labels, phase, weight, its rollback and the
    tail of its history, and a pending ``segue.dev/abort``."""
    return with_history(_member_summary(body), history_tail(body))


def history_tail(body: Json) -> tuple[Json, ...]:
    """The newest entries of a Rollout's history, as they came (parsed only when a
    Migration reads them: most Rollouts belong to none, and every watch event has them)."""
    history = (body.get("status") or {}).get("history")
    if not isinstance(history, list):
        return ()
    return tuple(raw for raw in history[-HISTORY_TAIL:] if isinstance(raw, dict))


def with_history(view: MemberView, tail: tuple[Json, ...]) -> MemberView:
    history: list[HistoryEntry] = []
    for raw in tail:
        try:
            history.append(HistoryEntry.model_validate(raw))
        except ValidationError:
            continue
    return replace(view, history=tuple(history))


def _member_summary(body: Json) -> MemberView:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    rollback = status.get("rollback") or {}
    weight = status.get("weight")
    return MemberView(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        phase=status.get("phase"),
        weight=weight if isinstance(weight, int) else 0,
        rollback_reason=rollback.get("reason"),
        rollback_started_at=_time(rollback.get("startedAt")),
        abort=(meta.get("annotations") or {}).get(ABORT),
    )


@dataclass(frozen=True)
class MigrationSummary:
    """A Migration as the Rollouts' reconciler and the other Migrations read it."""

    name: str
    created: str
    spec: MigrationSpec | None
    status: Json


@dataclass(frozen=True)
class MigrationGate:
    """Why a member Rollout may not start: its wave has not started (``stalled`` False:
    Waiting), or the Migration is held or rolled back (``stalled`` True)."""

    stalled: bool
    message: str


def _router_summaries() -> dict[str, Callable[[Json], Json]]:
    return {w.kind: w.summary for p in ROUTERS for w in p.watches}


@dataclass
class Store:
    deployments: dict[Key, DeploymentState] = field(default_factory=dict)
    # Summaries of the routers' kinds (HTTPRoutes, ...), by kind, as each router keeps them.
    objects: dict[str, dict[Key, Json]] = field(default_factory=dict)
    rollout_phases: dict[Key, str | None] = field(default_factory=dict)
    # By name (cluster-scoped): the parsed spec, or why it is unusable.
    metric_providers: dict[str, MetricProviderSpec | str] = field(default_factory=dict)
    # Each Rollout as a Migration reads it, without its history; the history's tail as it
    # came, parsed by members().
    rollouts: dict[Key, MemberView] = field(default_factory=dict)
    rollout_history: dict[Key, tuple[Json, ...]] = field(default_factory=dict)
    migrations: dict[Key, MigrationSummary] = field(default_factory=dict)
    # The resourceVersion of each Rollout summary and Deployment, so an older event never
    # replaces what a write's response already brought.
    rollout_versions: dict[Key, int] = field(default_factory=dict)
    deployment_versions: dict[Key, int] = field(default_factory=dict)
    # How the routers' kinds are summarised: what a write's response goes through (put).
    summaries: dict[str, Callable[[Json], Json]] = field(default_factory=_router_summaries)
    # Deployments and router objects whose summary changed since their last watch event
    # woke the Rollouts that read them (take_change).
    changed: set[tuple[str, Key]] = field(default_factory=set)

    # -- ClusterView (what routers and the reconciler read) ---------------------------

    def deployment(self, namespace: str, name: str) -> DeploymentState | None:
        return self.deployments.get((namespace, name))

    def get(self, kind: str, namespace: str, name: str) -> Json | None:
        return self.objects.get(kind, {}).get((namespace, name))

    def rollout_phase(self, namespace: str, name: str) -> tuple[bool, str | None]:
        key = (namespace, name)
        return key in self.rollout_phases, self.rollout_phases.get(key)

    def metric_provider(self, name: str) -> MetricProviderSpec | str | None:
        """The MetricProvider's spec, a text saying why it cannot be used, or None when
        there is no such MetricProvider."""
        return self.metric_providers.get(name)

    # -- fed by the watch handlers ----------------------------------------------------

    def put_summary(self, kind: str, body: Json, summary: Callable[[Json], Json]) -> None:
        """Keep ``summary(body)`` of an object of a router's kind, unless an at least as new
        copy is already kept (a write's response arrives before its watch event)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        kept = self.objects.setdefault(kind, {})
        current = kept.get(key)
        if newer(body, current):
            fresh = summary(body)
            if fresh != current:
                self.changed.add((kind, key))
            kept[key] = fresh

    def put(self, kind: str, body: Json) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if not key[1]:
            return  # not an object (an answer that could not be read)
        if kind in self.summaries:
            self.put_summary(kind, body, self.summaries[kind])
        elif kind == "Deployment":
            if self._older(self.deployment_versions, key, body):
                return
            current = self.deployments.get(key)
            fresh = DeploymentState.from_body(body, current)
            if fresh != current:
                self.changed.add((kind, key))
            self.deployments[key] = fresh
        elif kind == "Scale":
            # A Deployment's scale subresource as a write answered it: its count, ahead of
            # the Deployment's watch event, so the next pass does not ask for it again.
            current = self.deployments.get(key)
            replicas = (body.get("spec") or {}).get("replicas")
            if current is None or not isinstance(replicas, int):
                return
            if self._older(self.deployment_versions, key, body):
                return
            if replicas != current.desired:
                fresh = replace(current, desired=replicas)
                # The writer's own pass already acted on this count. Until the pods match
                # it, their watch events wake the Rollout; only a count that leaves the
                # Deployment settled (nothing more will change) must wake it now.
                if fresh.settled:
                    self.changed.add(("Deployment", key))
                self.deployments[key] = fresh
        elif kind == "Rollout":
            if self._older(self.rollout_versions, key, body):
                return
            self.rollout_phases[key] = (body.get("status") or {}).get("phase")
            self.rollouts[key] = _member_summary(body)
            self.rollout_history[key] = history_tail(body)
        elif kind == PROVIDER_KIND:
            self.metric_providers[key[1]] = _provider_spec(body)
        elif kind == MIGRATION_KIND:
            try:
                spec: MigrationSpec | None = MigrationSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                spec = None
            self.migrations[key] = MigrationSummary(
                key[1], str(meta.get("creationTimestamp", "")), spec, body.get("status") or {}
            )

    @staticmethod
    def _older(versions: dict[Key, int], key: Key, body: Json) -> bool:
        """Whether ``body`` is older than the copy kept (and if not, keep its version)."""
        version = resource_version(body)
        if version is None:
            return False
        if version < versions.get(key, -1):
            return True
        versions[key] = version
        return False

    def take_change(self, kind: str, namespace: str, name: str) -> bool:
        """Whether what Segue keeps of a Deployment or router object changed since the last
        call (and forget it). Most of a Deployment's status updates change nothing Segue
        reads (available replicas, conditions): they need not wake anyone. Kinds without a
        summary always answer True."""
        if kind != "Deployment" and kind not in self.summaries:
            return True
        key = (kind, (namespace, name))
        if key in self.changed:
            self.changed.discard(key)
            return True
        return False

    def drop(self, kind: str, namespace: str, name: str) -> None:
        key = (namespace, name)
        if kind in self.objects:
            self.objects[kind].pop(key, None)
        self.changed.discard((kind, key))
        if kind == "Deployment":
            self.deployments.pop(key, None)
            self.deployment_versions.pop(key, None)
        elif kind == "Rollout":
            self.rollout_phases.pop(key, None)
            self.rollouts.pop(key, None)
            self.rollout_history.pop(key, None)
            self.rollout_versions.pop(key, None)
        elif kind == PROVIDER_KIND:
            self.metric_providers.pop(name, None)
        elif kind == MIGRATION_KIND:
            self.migrations.pop(key, None)

    # -- Migrations -------------------------------------------------------------------

    def owners(self, namespace: str) -> dict[str, str]:
        """Rollout name -> the Migration that owns it (the oldest naming it)."""
        found = sorted(
            (m.created, m.name, m.spec)
            for (ns, _), m in self.migrations.items()
            if ns == namespace and m.spec is not None
        )
        labels = {n: v.labels for (ns, n), v in self.rollouts.items() if ns == namespace}
        return owners([(name, spec) for _, name, spec in found if spec is not None], labels)

    def members(
        self, namespace: str, owner: Mapping[str, str] | None = None
    ) -> dict[str, MemberView]:
        """Every Rollout of the namespace as a Migration sees it, with its owner (``owner``:
        ``owners(namespace)`` when the caller has it already)."""
        if owner is None:
            owner = self.owners(namespace)
        return {
            n: replace(with_history(v, self.rollout_history.get((ns, n), ())), owner=owner.get(n))
            for (ns, n), v in self.rollouts.items()
            if ns == namespace
        }

    def migration_gate(self, namespace: str, rollout: str) -> MigrationGate | None:
        """Whether the Migration owning ``rollout`` keeps it from starting."""
        if not any(ns == namespace for ns, _ in self.migrations):
            return None  # the common case: no Migration in the namespace, nothing to scan
        owners = self.owners(namespace)
        owner = owners.get(rollout)
        summary = self.migrations.get((namespace, owner)) if owner else None
        if summary is None or summary.spec is None:
            return None
        resolved = resolve(summary.name, summary.spec, self.members(namespace, owners))
        index = resolved.wave_of(rollout)
        if index is None:
            return None
        wave = summary.spec.waves[index].name
        status = summary.status
        waves = status.get("waves") or []
        started = index < len(waves) and bool((waves[index] or {}).get("startedAt"))
        phase = status.get("phase")
        if phase in ("Held", "RollingBack", "RolledBack", "Failed") and (
            not started or phase != "Held"
        ):
            return MigrationGate(
                True,
                f"Migration {summary.name} is {phase} (this Rollout is in its wave {index}, "
                f"{wave}; kubectl describe migration {summary.name} says why)",
            )
        if not started:
            return MigrationGate(
                False, f"waiting for Migration {summary.name} to start wave {index} ({wave})"
            )
        return None


def _provider_spec(body: Json) -> MetricProviderSpec | str:
    try:
        return MetricProviderSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return f"its spec.{loc} is invalid: {err['msg']}"[:300]
