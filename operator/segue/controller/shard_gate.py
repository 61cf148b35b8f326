"""The I/O of shards (decisions in segue.controller.shards): the holder of a shard's Lease
looks at its group's Leases before it serves, and keeps looking while it serves.

Looks go through the elector's own thread and API client, one LIST of the Leases of the
Lease namespace per retry period (2 s), beside the renewals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from segue.controller import leader
from segue.controller.kube import unreachable
from segue.controller.shards import GroupLease, GroupView, ServingCheck, Shard, group_lease

log = logging.getLogger(__name__)

Json = dict[str, Any]


class ShardGate:
    """:class:`segue.controller.leader.Gate` for one shard: open once no Lease of the group
    with another shard count is live; closed when one whose holder serves is claimed or
    renewed while this process serves."""

    def __init__(
        self,
        elector: leader.Elector,
        shard: Shard,
        group: str,
        list_leases: Callable[[], list[Json]],
        on_serving: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self.elector = elector
        self.shard = shard
        self.group = group
        self._list = list_leases
        self._on_serving = on_serving
        self.view = GroupView(shard, elector.timing)
        self.check: ServingCheck | None = None
        self.serving = False

    @property
    def where(self) -> str:
        return self.elector.where

    def _in(self, lease: GroupLease) -> str:
        return f"{self.elector.store.namespace}/{lease.describe()}"

    async def _look(self) -> list[GroupLease]:
        objects = await self.elector.call(self._list)
        return [lease for obj in objects if (lease := group_lease(self.group, obj)) is not None]

    def _failed(self, failing: str | None, e: BaseException) -> str:
        """Log a failed look once per kind; an outage is left to the elector and the
        operator's Kubernetes client, which say so already."""
        if unreachable(e):
            log.debug("shard %s: listing Leases failed: %s", self.shard, leader.describe(e))
            return leader.OUTAGE
        text = leader.describe(e)
        if text != failing:
            hint = ""
            if isinstance(e, ApiException) and e.status == 403:
                hint = f" (the operator needs list on leases in {self.elector.store.namespace})"
            log.warning(
                "shard %s: listing the Leases of %s failed: %s%s; retrying every %gs",
                self.shard, self.elector.store.namespace, text, hint,
                self.elector.timing.retry_period,
            )  # fmt: skip
        return text

    async def opened(self) -> None:
        own = self.elector.store.name
        announced: tuple[str, ...] | None = None
        failing: str | None = None
        while True:
            try:
                leases = await self._look()
            except Exception as e:  # what was seen may be stale: judge afresh later
                self.view.failed()
                failing = self._failed(failing, e)
                await asyncio.sleep(self.elector.timing.retry_period)
                continue
            failing = None
            blocking = self.view.look(leases, own, self.elector.clock())
            if not blocking:
                self.check = ServingCheck.at_start(leases)
                self.serving = True
                self._on_serving(True)
                log.info("serving shard %s (Lease %s)", self.shard, self.where)
                return
            names = tuple(lease.name for lease in blocking)
            if names != announced:
                log.info(
                    "shard %s holds Lease %s but waits to serve: Leases of another shard "
                    "count are live: %s; its Rollouts wait until those processes stop (they "
                    "release their Leases on shutdown) or their Leases expire",
                    self.shard, self.where, ", ".join(self._in(lease) for lease in blocking),
                )  # fmt: skip
                announced = names
            await asyncio.sleep(self.elector.timing.retry_period)

    async def closed(self) -> str:
        assert self.check is not None, "closed() before opened()"
        own = self.elector.store.name
        failing: str | None = None
        while True:
            await asyncio.sleep(self.elector.timing.retry_period)
            try:
                leases = await self._look()
            except Exception as e:  # an outage: nobody else can claim a Lease either
                failing = self._failed(failing, e)
                continue
            failing = None
            intruders = self.check.intruders(self.shard, leases, own)
            if intruders:
                return (
                    f"Lease {self._in(intruders[0])} was claimed or renewed by a process of "
                    f"another shard count that serves, while this process serves shard "
                    f"{self.shard}"
                )

    def stopped(self) -> None:
        if self.serving:
            self.serving = False
            self._on_serving(False)
            log.info("stopped serving shard %s", self.shard)


def elected_shard(
    namespace: str,
    group: str,
    shard: Shard,
    on_serving: Callable[[bool], None] = lambda _: None,
    timing: leader.Timing | None = None,
) -> tuple[leader.Elector, ShardGate]:
    """The elector of this process for ``shard``'s Lease in ``namespace`` (group ``group``,
    the --leader-election-name), and the gate it serves through."""
    timing = timing or leader.Timing()
    name = shard.lease_name(group)
    store = leader.KubeLeaseStore(leader.make_api_client(), namespace, name, timing.request_timeout)
    elector = leader.Elector(store, leader.default_identity(), timing, labels=shard.labels())
    return elector, ShardGate(elector, shard, group, store.list, on_serving)
