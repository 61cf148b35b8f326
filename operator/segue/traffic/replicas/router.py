"""Replicas router (no mesh): both Deployments sit behind one Service, and the weight is
approximated by the share of ready pods.

The total is the legacy's replica count before Segue first scaled anything. Until Segue
first writes the legacy Deployment it is the legacy's own spec.replicas; that first write
records it in the annotation segue.dev/baseline-replicas, in the same request, so a restart
keeps it once it differs.

The gaining side is scaled up first; the losing side is scaled down only once the gaining
side's pods are ready, so ready capacity never drops below the legacy's. A weight is read
back exactly once both Deployments settle at the counts of the weight asked for: the one
the Rollout's status records (RouterContext.asked), or the one this router was just asked
for. Nothing but replicas is written on the new Deployment: the Deployment controller
copies every annotation change onto the ReplicaSet, a write of its own, and that
controller (with the pods it starts) is what a replicas step waits for.

Both Deployments are read from the watch stream; their changes wake the Rollout. The
answer to each of the router's own writes goes into the same store ahead of its watch
event, so a pass in between does not write the same count again. With
``require_managed`` both must be labelled ``segue.dev/managed=true``, or nothing is scaled
or annotated.
"""

from __future__ import annotations

import math

from segue.api.routing import Segment
from segue.traffic.base import Calls, ClusterView, Ref, RouterContext, RouterError, not_managed
from segue.traffic.replicas.plugin import ReplicasSettings
from segue.workloads.deployments import Deployments, DeploymentState

BASELINE = "segue.dev/baseline-replicas"


def targets(total: int, weight: int) -> tuple[int, int]:
    """(legacy, new) replica counts for `weight`; any non-zero share gets at least one pod."""
    new = 0 if weight == 0 else max(1, math.ceil(total * weight / 100))
    new = min(new, total)
    legacy = total - math.floor(total * weight / 100)
    if weight < 100:
        legacy = max(legacy, 1)
    return legacy, new


def build(ctx: RouterContext, settings: ReplicasSettings) -> ReplicasRouter:
    return ReplicasRouter(
        ctx.view,
        ctx.calls,
        ctx.namespace,
        ctx.legacy.deployment,
        ctx.new.deployment,
        require_managed=ctx.require_managed,
        asked=ctx.asked,
    )


class ReplicasRouter:
    manages_capacity = True

    def __init__(
        self,
        view: ClusterView,
        calls: Calls,
        namespace: str,
        legacy: str,
        new: str,
        *,
        require_managed: bool = False,
        asked: int | None = None,
    ) -> None:
        self._view = view
        self._deployments = Deployments(calls, namespace)
        self.namespace = namespace
        self.legacy = legacy
        self.new = new
        self.require_managed = require_managed
        self.asked = asked

    def watches(self) -> list[Ref]:
        return [
            ("Deployment", self.namespace, self.legacy),
            ("Deployment", self.namespace, self.new),
        ]

    def unmanaged(self) -> list[Ref]:
        if not self.require_managed:
            return []
        out: list[Ref] = []
        for name in (self.legacy, self.new):
            state = self._view.deployment(self.namespace, name)
            if state is not None and not state.managed:
                out.append(("Deployment", self.namespace, name))
        return out

    def _read(self) -> tuple[DeploymentState, DeploymentState | None]:
        legacy = self._view.deployment(self.namespace, self.legacy)
        if legacy is None:
            raise RouterError(f"Deployment {self.namespace}/{self.legacy} not found")
        return legacy, self._view.deployment(self.namespace, self.new)

    @staticmethod
    def _baseline(legacy: DeploymentState) -> int:
        if BASELINE in legacy.annotations:
            return max(1, int(legacy.annotations[BASELINE]))
        return max(1, legacy.desired)  # nothing scaled yet: its own count is the baseline

    async def _scale(self, name: str, replicas: int) -> None:
        """Scale one side; the view takes the answer ahead of the Deployment's watch event,
        so a pass before that event does not ask for the same count again."""
        self._view.put("Scale", await self._deployments.scale(name, replicas))

    async def _scale_legacy(self, legacy: DeploymentState, total: int, replicas: int) -> None:
        """Scale the legacy side; its first scaling records the baseline with it."""
        if BASELINE in legacy.annotations:
            await self._scale(self.legacy, replicas)
        else:
            written = await self._deployments.annotate(
                self.legacy, {BASELINE: str(total)}, replicas=replicas
            )
            self._view.put("Deployment", written)

    def read_weight(self) -> int:
        legacy, new = self._read()
        if new is None:
            return 0  # no new Deployment: nothing can serve it
        requested = self.asked
        if requested is not None:
            want_legacy, want_new = targets(self._baseline(legacy), requested)
            if (
                (legacy.desired, new.desired) == (want_legacy, want_new)
                and legacy.settled
                and new.settled
            ):
                return requested
        if legacy.ready + new.ready == 0:
            return 0
        return round(100 * new.ready / (legacy.ready + new.ready))

    def read_segment(self) -> Segment | None:
        return None  # pods are picked by the Service: there is no per-request rule

    async def set_weight(self, weight: int, segment: Segment | None = None) -> None:
        if segment is not None:
            raise RouterError("the replicas router cannot send a segment to the new version")
        if not 0 <= weight <= 100:
            raise ValueError(f"weight {weight} outside 0..100")
        unmanaged = self.unmanaged()
        if unmanaged:
            raise not_managed(*unmanaged[0])
        legacy, new = self._read()
        total = self._baseline(legacy)
        want_legacy, want_new = targets(total, weight)
        if new is None:
            # The new version is gone: legacy takes all of it, as fast as it can grow.
            if want_legacy > legacy.desired:
                await self._scale_legacy(legacy, total, want_legacy)
            return
        self.asked = weight
        # Grow first; shrink a side only when the other side's grown pods are ready.
        if want_new > new.desired:
            await self._scale(self.new, want_new)
        if want_legacy > legacy.desired:
            await self._scale_legacy(legacy, total, want_legacy)
        if want_new < new.desired and legacy.ready >= want_legacy and legacy.desired >= want_legacy:
            await self._scale(self.new, want_new)
        if want_legacy < legacy.desired and new.ready >= want_new and new.desired >= want_new:
            await self._scale_legacy(legacy, total, want_legacy)
