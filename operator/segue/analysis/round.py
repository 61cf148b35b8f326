"""One analysis round: every gate of a Rollout evaluated once, concurrently.

The provider is blocking, so each query runs on a worker of the provider's own query pool
(its bulkhead, see ``pool.py``), never in asyncio's default executor, and the event loop
never waits on the network. Every query has a hard deadline (the provider's timeout plus a
little slack), and so has the round: what has not answered by then is reported as an
unreachable round, however many workers are stuck. Gates are independent: a broken gate
yields an ``Error`` verdict of its own and never spoils the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from segue.analysis.judge import error_verdict, judge, provider_error_message
from segue.analysis.planning import GateMisconfigured, PlannedGate, plan_gate
from segue.analysis.provider import (
    MetricProvider,
    PooledProvider,
    ProviderError,
    ProviderUnavailable,
    QueryTimedOut,
)
from segue.analysis.templates import bound_text
from segue.analysis.types import GateRound, GateSpec, GateVerdict, RoundContext

log = logging.getLogger(__name__)

_Outcome = float | None | ProviderError


async def evaluate_round(
    gates: Sequence[GateSpec],
    context: RoundContext,
    provider: PooledProvider | MetricProvider,
    now: datetime,
    *,
    deadline_s: float | None = None,
) -> GateRound:
    """Evaluate all gates for one round.

    Each gate's query runs for the new version, and for the legacy version too: a ratio
    bound needs it, and for absolute bounds it is shown next to the new value. Identical
    queries run once, on ``provider``'s pool; a bare :class:`MetricProvider` gets a pool of
    its own for this round. ``error`` is set on the round when every query that ran failed
    with :class:`ProviderUnavailable` (a saturated pool included), or when the round's
    deadline (``deadline_s``, by default the provider's ``round_deadline_s``) passed
    before every query answered.
    """
    if isinstance(provider, PooledProvider):
        pooled, own_pool = provider, False
    else:
        pooled, own_pool = PooledProvider.standalone(provider), True
    try:
        return await _evaluate(gates, context, pooled, now, deadline_s)
    finally:
        if own_pool:
            pooled.pool.shutdown()


async def _evaluate(
    gates: Sequence[GateSpec],
    context: RoundContext,
    provider: PooledProvider,
    now: datetime,
    deadline_s: float | None,
) -> GateRound:
    results: list[GateVerdict | PlannedGate] = [_plan(spec, context) for spec in gates]
    queries: list[str] = []
    for item in results:
        if isinstance(item, PlannedGate):
            for q in (item.new_query, item.legacy_query):
                if q is not None and q not in queries:
                    queries.append(q)

    deadline = provider.round_deadline_s if deadline_s is None else deadline_s
    outcomes: dict[str, _Outcome] = {}
    late = 0
    refused = provider.pool.refusal()
    if refused is not None:
        # Fail fast: the pool would not take a single query now.
        outcomes = dict.fromkeys(queries, refused)
    elif queries:
        tasks = {q: asyncio.create_task(_query(provider, q)) for q in queries}
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

    verdicts = tuple(
        item if isinstance(item, GateVerdict) else _verdict(item, outcomes, context, provider)
        for item in results
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
    return GateRound(evaluated_at=now, results=verdicts, error=error)


def _plan(spec: GateSpec, ctx: RoundContext) -> GateVerdict | PlannedGate:
    try:
        return plan_gate(spec, ctx)
    except GateMisconfigured as e:
        return error_verdict(
            spec.name,
            e.message,
            bound=e.bound,
            severity=e.severity,
            failure_limit=e.failure_limit,
        )


def _verdict(
    item: PlannedGate,
    outcomes: dict[str, _Outcome],
    ctx: RoundContext,
    provider: PooledProvider,
) -> GateVerdict:
    gate = item.gate
    new = outcomes[item.new_query]
    legacy = outcomes[item.legacy_query] if item.legacy_query is not None else None
    failed: ProviderError | None = None
    if isinstance(new, ProviderError):
        failed = new
    elif isinstance(legacy, ProviderError) and gate.bounds.relative:
        failed = legacy
    if failed is not None:
        return error_verdict(
            gate.name,
            provider_error_message(gate.name, failed, provider.name),
            bound=bound_text(gate.bounds, gate.per_traffic_share),
            severity=gate.severity,
            failure_limit=gate.failure_limit,
            value=None if isinstance(new, ProviderError) else new,
            legacy_value=None if isinstance(legacy, ProviderError) else legacy,
        )
    # For absolute bounds the legacy value is informational: its failure does not matter.
    legacy_value = None if isinstance(legacy, ProviderError) else legacy
    assert not isinstance(new, ProviderError)
    return judge(gate, new, legacy_value, weight=ctx.weight)


async def _query(provider: PooledProvider, query: str) -> _Outcome:
    try:
        return await provider.query(query)
    except ProviderError as e:
        return e
    except Exception as e:
        # A provider bug must not take the round (or the other gates) down with it.
        log.exception("metric provider %s failed on %r", provider.name, query)
        return ProviderError(f"unexpected {type(e).__name__}: {e}")
