"""Batched gate queries: the gates of many Rollouts that share a provider connection, a
template (with the same labels) and an analysis interval are evaluated together, one query
per template per tick, and each Rollout reads its own series from the answer.

A provider says which gate sides can share a query by planning a ``BatchRef``
(``segue.analysis.batches``): a ``Family`` (what is measured, and how: its batched query and
how to read one member's value from the answer) and a member (which series one Rollout's
version reads, e.g. its app and version label values). Everything else, a custom query
above all, runs alone as before.

How ticks form. A Rollout's round asks for its member's value (:meth:`Batcher.value`):

- an answer started at most ``fresh_s`` ago (half the interval, at most 5 s) that covers the
  member is used as it is (or awaited while in flight);
- otherwise the member joins the batch being gathered, or opens one, which is sent
  ``gather_s`` (0.25 s) later. A new batch takes every member asked for within the last
  1.5 intervals and not covered by a fresh answer: the members whose rounds come next.

Rounds of Rollouts with the same interval start on the same grid of loop time
(``controller/gates.py`` ``RoundScheduler``), so in steady state every tick sends one query
per family (more only when it exceeds the family's bounds: a chunk has at most 100
Rollouts' worth of series and a bounded matcher). A Rollout that stops asking (no traffic
split: idle, waiting, done) leaves the batches after 1.5 intervals and costs nothing.

Batches run on the provider's query pool (its bulkhead), each query within the pool's
deadline and the whole batch within the round's deadline; a failed query gives every member
of its chunk the same :class:`~segue.analysis.errors.ProviderError` a query of its own would
have given, so each Rollout's round judges it as before.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Final

from segue.analysis.batches import BatchRef, Family
from segue.analysis.clients import PooledClient
from segue.analysis.counting import QUERIES
from segue.analysis.errors import ProviderError, QueryTimedOut

log = logging.getLogger(__name__)

# How long the first request of a tick waits for the others before its batch is sent.
GATHER_S: Final = 0.25
# How old (from when it was sent) an answer may be and still serve a round: at most half
# the interval, and never more than this.
MAX_FRESH_S: Final = 5.0
# Members asked for within this many intervals are included in the next batch.
RECENT_INTERVALS: Final = 1.5
# Batch keys (connection, family, interval) kept per event loop; the idlest go first.
MAX_KEYS: Final = 4096

Outcome = float | None | ProviderError


@dataclass(eq=False)
class _Batch:
    members: set[Hashable]
    done: asyncio.Future[dict[Hashable, Outcome]]
    sent_at: float | None = None


@dataclass(eq=False)
class _State:
    recent: dict[Hashable, float] = field(default_factory=dict)
    gathering: _Batch | None = None
    sent: list[_Batch] = field(default_factory=list)  # oldest first
    used_at: float = 0.0


class Batcher:
    """Gathers the batched gate queries of one process (see the module's description)."""

    def __init__(
        self,
        *,
        gather_s: float = GATHER_S,
        max_fresh_s: float = MAX_FRESH_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.gather_s = gather_s
        self.max_fresh_s = max_fresh_s
        self._clock = clock
        # Futures belong to a loop: each loop (one in the operator, one per test) has its own.
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[object, ...], _State]
        ] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[None]] = set()

    def fresh_s(self, interval_s: float) -> float:
        return min(interval_s / 2, self.max_fresh_s)

    async def value(self, client: PooledClient, ref: BatchRef, interval_s: float) -> float | None:
        """``ref.member``'s value from a batch of ``ref.family`` on ``client``; raises the
        :class:`ProviderError` its chunk's query raised."""
        loop = asyncio.get_running_loop()
        now = self._now(loop)
        states = self._loops.setdefault(loop, {})
        key = (client, ref.family, interval_s)
        state = states.get(key)
        if state is None:
            if len(states) >= MAX_KEYS:
                self._drop_idlest(states)
            state = states[key] = _State()
        state.used_at = now
        fresh = self.fresh_s(interval_s)
        self._prune(state, now, interval_s, fresh)
        state.recent[ref.member] = now
        for sent in reversed(state.sent):
            if ref.member in sent.members:
                return _outcome(await asyncio.shield(sent.done), ref.member)
        batch = state.gathering
        if batch is None:
            covered: set[Hashable] = set()
            for answered in state.sent:
                covered |= answered.members
            batch = _Batch({m for m in state.recent if m not in covered}, loop.create_future())
            state.gathering = batch
            task = loop.create_task(self._send(state, batch, client, ref.family, loop))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        batch.members.add(ref.member)
        return _outcome(await asyncio.shield(batch.done), ref.member)

    def _now(self, loop: asyncio.AbstractEventLoop) -> float:
        return self._clock() if self._clock is not None else loop.time()

    def _prune(self, state: _State, now: float, interval_s: float, fresh: float) -> None:
        """Forget members not asked for lately and answers too old to serve."""
        horizon = now - RECENT_INTERVALS * interval_s
        for member in [m for m, at in state.recent.items() if at < horizon]:
            del state.recent[member]
        state.sent = [b for b in state.sent if b.sent_at is not None and now - b.sent_at <= fresh]

    def _drop_idlest(self, states: dict[tuple[object, ...], _State]) -> None:
        idle = [(s.used_at, k) for k, s in states.items() if s.gathering is None]
        if idle:
            del states[min(idle, key=lambda pair: pair[0])[1]]

    async def _send(
        self,
        state: _State,
        batch: _Batch,
        client: PooledClient,
        family: Family,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        outcomes: dict[Hashable, Outcome] = {}
        try:
            await asyncio.sleep(self.gather_s)
            if state.gathering is batch:
                state.gathering = None
            batch.sent_at = self._now(loop)
            state.sent.append(batch)
            # Within the deadline of the rounds waiting for it, which began before the gather.
            deadline = max(client.round_deadline_s - self.gather_s, client.query_deadline_s)
            outcomes = await _run(client, family, tuple(batch.members), deadline)
        except asyncio.CancelledError:  # the loop is closing
            error = ProviderError("batched query cancelled")
            outcomes = dict.fromkeys(batch.members, error)
            raise
        except Exception as e:  # a bug must not leave the batch's rounds waiting
            log.exception("batched %s query failed", family.template)
            error = ProviderError(f"batched query failed: {type(e).__name__}: {e}")
            outcomes = dict.fromkeys(batch.members, error)
        finally:
            if state.gathering is batch:
                state.gathering = None
            if not batch.done.done():
                batch.done.set_result(outcomes)


async def _run(
    client: PooledClient, family: Family, members: tuple[Hashable, ...], deadline: float
) -> dict[Hashable, Outcome]:
    """Every chunk's query on the client's pool, within ``deadline`` seconds."""
    chunks = family.chunks(members)
    tasks = {
        asyncio.create_task(_chunk(client, family, query, part)): part for query, part in chunks
    }
    outcomes: dict[Hashable, Outcome] = {}
    if not tasks:
        return outcomes
    try:
        done, pending = await asyncio.wait(tasks, timeout=deadline)
    finally:
        for task in tasks:
            task.cancel()
    for task in pending:
        late = QueryTimedOut(f"{client.label} did not answer before the deadline of {deadline:g}s")
        outcomes.update(dict.fromkeys(tasks[task], late))
    if pending:
        await asyncio.wait(pending)
    for task in done:
        outcomes.update(task.result())
    return outcomes


async def _chunk(
    client: PooledClient, family: Family, query: str, members: tuple[Hashable, ...]
) -> dict[Hashable, Outcome]:
    QUERIES.sent(client.name, family.template, len(members))
    try:
        series = await client.query_vector(query)
    except ProviderError as e:
        return dict.fromkeys(members, e)
    except Exception as e:
        # A provider bug must not take the rounds of every Rollout in the batch down.
        log.exception("metric provider %s failed on %r", client.name, query)
        return dict.fromkeys(members, ProviderError(f"unexpected {type(e).__name__}: {e}"))
    outcomes: dict[Hashable, Outcome] = {}
    for member in members:
        try:
            outcomes[member] = family.pick(series, member)
        except ProviderError as e:
            outcomes[member] = e
    return outcomes


def _outcome(outcomes: dict[Hashable, Outcome], member: Hashable) -> float | None:
    found = outcomes.get(member)
    if isinstance(found, ProviderError):
        raise found
    return found


BATCHER: Final = Batcher()
