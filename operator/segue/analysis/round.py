"""One analysis round: the gates a provider planned, their queries run once each,
concurrently (or read from a batched query shared with other Rollouts, ``batcher``), and
judged into the API's ``GateStatus``. Shared by every metric provider.

Query clients are blocking, so each query runs on a worker of its address's own query pool
(its bulkhead, see ``pool.py``), never in asyncio's default executor, and the event loop
never waits on the network. Every query has a hard deadline (the client's timeout plus a
little slack), and so has the round: what has not answered by then is reported as an
unreachable round, however many workers are stuck. Gates are independent: a broken gate
yields an ``Error`` status of its own and never spoils the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from segue.analysis.batcher import Batcher
from segue.analysis.batches import BatchRef
from segue.analysis.bounds import compares_with_legacy
from segue.analysis.clients import PooledClient, QueryClient
from segue.analysis.counting import CUSTOM, QUERIES
from segue.analysis.errors import ProviderError, ProviderUnavailable, QueryTimedOut
from segue.analysis.judge import error_status, judge, provider_error_message
from segue.api.spec import Gate
from segue.api.status import GateStatus
from segue.engine.types import GateRound

log = logging.getLogger(__name__)

_Outcome = float | None | ProviderError


class Planned(Protocol):
    """A gate a provider has planned for one round: the gate as it runs (bounds and policy
    filled in) and one query per version (``legacy_query`` None: legacy is not asked)."""

    @property
    def gate(self) -> Gate: ...

    @property
    def new_query(self) -> str: ...

    @property
    def legacy_query(self) -> str | None: ...

    @property
    def new_batch(self) -> BatchRef | None:
        """Where the new version's value comes from when it shares a batched query."""
        ...

    @property
    def legacy_batch(self) -> BatchRef | None: ...


@dataclass(frozen=True)
class Batching:
    """Share queries with other Rollouts' rounds through ``batcher``, on the tick grid of
    ``interval_s`` (the Rollout's analysis interval)."""

    batcher: Batcher
    interval_s: float


async def run_round(
    items: Sequence[GateStatus | Planned],
    provider: PooledClient | QueryClient,
    now: datetime,
    *,
    weight: float,
    deadline_s: float | None = None,
    batching: Batching | None = None,
) -> GateRound:
    """Run the queries of the planned gates and judge them; a status among ``items`` (a gate
    that could not be planned) is passed through as it is.

    Identical queries run once, on ``provider``'s pool; a bare :class:`QueryClient` gets a
    pool of its own for this round. With ``batching`` (and a pooled client that answers
    vector queries), a side with a batch ref reads its value from a batched query shared
    with other Rollouts (``batcher``); its outcome, errors included, is what its own query
    would have given. ``error`` is set on the round when every query that
    ran failed with :class:`ProviderUnavailable` (a saturated pool included), or when the
    round's deadline (``deadline_s``, by default the provider's ``round_deadline_s``)
    passed before every query answered.
    """
    if isinstance(provider, PooledClient):
        pooled, own_pool = provider, False
    else:
        pooled, own_pool = PooledClient.standalone(provider), True
    try:
        return await _evaluate(items, pooled, now, weight, deadline_s, batching)
    finally:
        if own_pool:
            pooled.pool.shutdown()


async def _evaluate(
    items: Sequence[GateStatus | Planned],
    provider: PooledClient,
    now: datetime,
    weight: float,
    deadline_s: float | None,
    batching: Batching | None,
) -> GateRound:
    queries: list[str] = []
    batched: dict[str, BatchRef] = {}
    templates: dict[str, str] = {}
    share = batching is not None and provider.batches
    for item in items:
        if not isinstance(item, GateStatus):
            sides = ((item.new_query, item.new_batch), (item.legacy_query, item.legacy_batch))
            for q, ref in sides:
                if q is not None and q not in queries:
                    queries.append(q)
                    templates[q] = item.gate.template or CUSTOM
                    if share and ref is not None:
                        batched[q] = ref

    deadline = provider.round_deadline_s if deadline_s is None else deadline_s
    outcomes: dict[str, _Outcome] = {}
    late = 0
    refused = provider.pool.refusal()
    if refused is not None:
        # Fail fast: the pool would not take a single query now.
        outcomes = dict.fromkeys(queries, refused)
    elif queries:
        tasks = {
            q: asyncio.create_task(
                _shared(provider, batched[q], batching)
                if q in batched and batching is not None
                else _query(provider, q, templates[q])
            )
            for q in queries
        }
        try:
            _, pending = await asyncio.wait(tasks.values(), timeout=deadline)
        finally:
            # Also when this round is cancelled: a query not yet started is then dropped.
            for task in tasks.values():
                task.cancel()
        if pending:
            await asyncio.wait(pending)
        for q, task in tasks.items():
            if task.cancelled():
                late += 1
                outcomes[q] = QueryTimedOut(
                    f"{provider.label} did not answer before the round's deadline of {deadline:g}s"
                )
            else:
                outcomes[q] = task.result()

    results = tuple(
        item if isinstance(item, GateStatus) else _status(item, outcomes, weight, provider, now)
        for item in items
    )
    error = None
    if late:
        error = (
            f"{provider.label}: {late} of {len(outcomes)} queries of the round did not answer "
            f"within its deadline of {deadline:g}s"
        )
    elif outcomes and all(isinstance(o, ProviderUnavailable) for o in outcomes.values()):
        first = next(iter(outcomes.values()))
        error = f"{provider.name} unreachable for every query of the round: {first}"
    return GateRound(evaluated_at=now, results=results, error=error)


def _status(
    item: Planned,
    outcomes: dict[str, _Outcome],
    weight: float,
    provider: PooledClient,
    now: datetime,
) -> GateStatus:
    gate = item.gate
    new = outcomes[item.new_query]
    legacy = outcomes[item.legacy_query] if item.legacy_query is not None else None
    failed: ProviderError | None = None
    if isinstance(new, ProviderError):
        failed = new
    elif isinstance(legacy, ProviderError) and compares_with_legacy(gate):
        failed = legacy
    if failed is not None:
        return error_status(
            gate,
            provider_error_message(gate.name, failed, provider.name),
            value=None if isinstance(new, ProviderError) else new,
            legacy_value=None if isinstance(legacy, ProviderError) else legacy,
            at=now,
        )
    # For absolute bounds the legacy value is informational: its failure does not matter.
    legacy_value = None if isinstance(legacy, ProviderError) else legacy
    assert not isinstance(new, ProviderError)
    return judge(gate, new, legacy_value, weight=weight, at=now)


async def _shared(provider: PooledClient, ref: BatchRef, batching: Batching) -> _Outcome:
    try:
        return await batching.batcher.value(provider, ref, batching.interval_s)
    except ProviderError as e:
        return e


async def _query(provider: PooledClient, query: str, template: str) -> _Outcome:
    QUERIES.sent(provider.name, template, 1)
    try:
        return await provider.query(query)
    except ProviderError as e:
        return e
    except Exception as e:
        # A provider bug must not take the round (or the other gates) down with it.
        log.exception("metric provider %s failed on %r", provider.name, query)
        return ProviderError(f"unexpected {type(e).__name__}: {e}")
