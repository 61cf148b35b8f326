"""Replicas router (no mesh): both Deployments sit behind one Service, and the weight is
approximated by the share of ready pods.

The total is the legacy's replica count before Segue first scaled anything (kept in the
annotation segue.dev/baseline-replicas on the legacy Deployment, so a restart keeps it).
The gaining side is scaled up first; the losing side is scaled down only once the gaining
side's pods are ready, so ready capacity never drops below the legacy's.
"""

from __future__ import annotations

import math

from kubernetes import client

from segue.traffic.base import RouterError
from segue.workloads.deployments import DeploymentMissing, Deployments, DeploymentState

BASELINE = "segue.dev/baseline-replicas"
WEIGHT = "segue.dev/weight"


def targets(total: int, weight: int) -> tuple[int, int]:
    """(legacy, new) replica counts for `weight`; any non-zero share gets at least one pod."""
    new = 0 if weight == 0 else max(1, math.ceil(total * weight / 100))
    new = min(new, total)
    legacy = total - math.floor(total * weight / 100)
    if weight < 100:
        legacy = max(legacy, 1)
    return legacy, new


class ReplicasRouter:
    manages_capacity = True

    def __init__(self, api: client.ApiClient, namespace: str, legacy: str, new: str) -> None:
        self._deployments = Deployments(api, namespace)
        self.namespace = namespace
        self.legacy = legacy
        self.new = new

    async def _read(self) -> tuple[DeploymentState, DeploymentState]:
        try:
            return await self._deployments.read(self.legacy), await self._deployments.read(self.new)
        except DeploymentMissing as e:
            raise RouterError(f"{e} not found") from e

    async def verify(self) -> list[str]:
        try:
            await self._read()
        except RouterError as e:
            return [str(e)]
        return []

    async def _baseline(self, legacy: DeploymentState, new: DeploymentState) -> int:
        if BASELINE in legacy.annotations:
            return max(1, int(legacy.annotations[BASELINE]))
        total = max(1, legacy.desired)
        await self._deployments.annotate(self.legacy, {BASELINE: str(total)})
        return total

    async def read_weight(self) -> int:
        legacy, new = await self._read()
        requested = new.annotations.get(WEIGHT)
        if requested is not None and BASELINE in legacy.annotations:
            want_legacy, want_new = targets(int(legacy.annotations[BASELINE]), int(requested))
            if (
                (legacy.desired, new.desired) == (want_legacy, want_new)
                and legacy.settled
                and new.settled
            ):
                return int(requested)
        if legacy.ready + new.ready == 0:
            return 0
        return round(100 * new.ready / (legacy.ready + new.ready))

    async def set_weight(self, weight: int) -> None:
        if not 0 <= weight <= 100:
            raise ValueError(f"weight {weight} outside 0..100")
        legacy, new = await self._read()
        total = await self._baseline(legacy, new)
        want_legacy, want_new = targets(total, weight)
        if new.annotations.get(WEIGHT) != str(weight):
            await self._deployments.annotate(self.new, {WEIGHT: str(weight)})
        # Grow first; shrink a side only when the other side's grown pods are ready.
        if want_new > new.desired:
            await self._deployments.scale(self.new, want_new)
        if want_legacy > legacy.desired:
            await self._deployments.scale(self.legacy, want_legacy)
        if want_new < new.desired and legacy.ready >= want_legacy and legacy.desired >= want_legacy:
            await self._deployments.scale(self.new, want_new)
        if want_legacy < legacy.desired and new.ready >= want_new and new.desired >= want_new:
            await self._deployments.scale(self.legacy, want_legacy)
