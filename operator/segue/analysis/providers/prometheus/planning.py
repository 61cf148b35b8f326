"""Planning a gate for one round: resolve it against its template, then render its query
for the new and the legacy version.

The same function serves three callers: every analysis round (a gate that cannot be planned
gets an ``Error`` status), the operator before the first step and on every spec change (a
Rollout whose gates cannot be planned is Failed before any traffic moves), and
``segue lint`` (offline). So what lint accepts is what the operator runs. Rounds take their
plans from a ``PlanCache``: a plan changes only with the spec, and a round comes every interval.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from segue.analysis.batches import BatchRef
from segue.analysis.bounds import compares_with_legacy
from segue.analysis.providers.base import GateProblem, Loc, RoundContext
from segue.analysis.providers.prometheus.batching import batch_refs
from segue.analysis.providers.prometheus.templates import resolve_gate, with_policy
from segue.analysis.providers.prometheus.templating import TemplateError, render

if TYPE_CHECKING:
    from segue.api.spec import Gate

# Plans a PlanCache keeps: two gates each of 2,000 Rollouts (about 1.5 KiB a plan).
PLAN_CACHE_SIZE: Final = 4096

# Where a placeholder's value comes from in a Rollout, for a value that cannot be used.
_VALUE_SOURCES = {
    "interval": ("spec", "analysis", "interval"),
    "rollout": ("metadata", "name"),
    "namespace": ("metadata", "namespace"),
}


@dataclass(frozen=True)
class QueryPlan:
    """One gate ready for a round: the gate as it runs (its query built, bounds and policy
    filled in from its template) and its PromQL rendered for each version. Internal to this
    provider; the round reads it as ``segue.analysis.round.Planned``."""

    gate: Gate
    new_query: str
    # None when the legacy side cannot be queried (then only absolute bounds can be judged).
    legacy_query: str | None
    # Where each side's value comes from when the gate shares a batched query with other
    # Rollouts' (``batching``); None: its query runs alone.
    new_batch: BatchRef | None = None
    legacy_batch: BatchRef | None = None


class GateMisconfigured(Exception):
    """A gate that cannot be planned. ``message`` is what its status says; ``detail`` says
    the same without naming the gate, next to ``loc``: the field at fault, relative to the
    gate (``("labels", "metric")``) or, when it starts with ``"spec"`` or ``"metadata"``,
    relative to the Rollout. ``gate`` is the gate with the bound and policy it would have
    run with."""

    def __init__(self, message: str, detail: str, loc: Loc, gate: Gate) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.loc = loc
        self.gate = gate


def plan_gate(gate: Gate, ctx: RoundContext) -> QueryPlan:
    """The gate resolved and its queries rendered for this round; GateMisconfigured if not."""
    try:
        running = resolve_gate(gate)
    except TemplateError as e:
        raise GateMisconfigured(
            f"gate {gate.name} is misconfigured: {e}", str(e), _where(gate, e), with_policy(gate)
        ) from None
    assert running.query is not None  # resolve_gate builds it

    def misconfigured(message: str, detail: str, loc: Loc) -> GateMisconfigured:
        return GateMisconfigured(message, detail, loc, running)

    common = {"namespace": ctx.namespace, "rollout": ctx.rollout, "interval": ctx.interval}
    try:
        new_query = render(running.query, version=ctx.new_version, **common)
    except TemplateError as e:
        raise misconfigured(
            f"cannot build the query of gate {gate.name} for the new version: {e}",
            f"cannot build the query for the new version: {e}",
            _value_source(gate, e, "new"),
        ) from None
    legacy_query: str | None = None
    try:
        legacy_query = render(running.query, version=ctx.legacy_version, **common)
    except TemplateError as e:
        # Only a ratio bound needs legacy; otherwise its value is merely shown.
        if compares_with_legacy(running):
            raise misconfigured(
                f"cannot build the query of gate {gate.name} for the legacy version: {e}",
                f"cannot build the query for the legacy version: {e}",
                _value_source(gate, e, "legacy"),
            ) from None
    if legacy_query == new_query:
        # Legacy and new would be the same number, so a ratio bound would always read 1x.
        legacy_query = None
        if compares_with_legacy(running):
            why = (
                "compares with legacy but its query is the same for both versions "
                "(does it use {{ version }}, and do the versions differ?)"
            )
            raise misconfigured(
                f"gate {gate.name} {why}",
                why,
                ("query",) if gate.query is not None else ("spec", "new", "version"),
            )
    refs = batch_refs(running, ctx)
    if refs is None:
        return QueryPlan(running, new_query, legacy_query)
    return QueryPlan(
        running, new_query, legacy_query, refs[0], refs[1] if legacy_query is not None else None
    )


def gate_problems(gates: Sequence[Gate], ctx: RoundContext) -> list[GateProblem]:
    """Every gate planned as a round would plan it; the ones that cannot be, and why."""
    problems = []
    for i, gate in enumerate(gates):
        try:
            plan_gate(gate, ctx)
        except GateMisconfigured as e:
            loc = e.loc if e.loc[:1] in (("spec",), ("metadata",)) else _gate_loc(i, e.loc)
            problems.append(GateProblem(i, gate.name, loc, e.detail))
    return problems


def _gate_loc(index: int, loc: Loc) -> Loc:
    return ("spec", "analysis", "gates", index, *loc)


def _where(gate: Gate, e: TemplateError) -> Loc:
    if e.label is not None:
        return ("labels", e.label)
    return ("query",) if gate.query is not None else ("template",)


def _value_source(gate: Gate, e: TemplateError, side: str) -> Loc:
    """A query that resolved renders with every valid value: what failed is a value."""
    if e.field == "version":
        return ("spec", side, "version")
    return _VALUE_SOURCES.get(e.field or "", ("query",) if gate.query is not None else ())


class PlanCache:
    """The plans of recent rounds' gates, least recently used out past ``size``.

    A plan depends on the gate and on the Rollout's namespace, name, versions and interval
    (not on the weight), which change only with the spec, while a round comes every
    interval: planning each round again (resolving the template, rendering both queries)
    was an eighth of the operator's CPU with 1,000 Rollouts waiting with two gates each.
    The key is the gate object itself: a worker keeps one parsed spec per generation, so a
    new generation brings new gates and is planned anew. A gate that cannot be planned is
    not kept (its round reports the error, and the next one tries again)."""

    def __init__(self, size: int = PLAN_CACHE_SIZE) -> None:
        self.size = size
        self._plans: OrderedDict[tuple[int, RoundContext], tuple[Gate, QueryPlan]]
        self._plans = OrderedDict()

    def __len__(self) -> int:
        return len(self._plans)

    def plan(self, gate: Gate, ctx: RoundContext) -> QueryPlan:
        """``plan_gate(gate, ctx)``, from the cache when this gate was planned for the same
        context but its weight; GateMisconfigured as ``plan_gate`` raises it."""
        # The entry holds the gate, so its id is not reused while the entry is here.
        key = (id(gate), replace(ctx, weight=0.0))
        kept = self._plans.get(key)
        if kept is not None:
            self._plans.move_to_end(key)
            return kept[1]
        planned = plan_gate(gate, ctx)
        self._plans[key] = (gate, planned)
        if len(self._plans) > self.size:
            self._plans.popitem(last=False)
        return planned
