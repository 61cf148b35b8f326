"""Gate rounds: counting verdicts into per-gate streaks, and what the streaks allow.

A round is counted once per gate (its ``evaluated_at`` must be newer than the gate's
``lastEvaluated``, which is in status, so a round delivered twice, replayed after a restart
or a lost status write, or arriving out of order never counts again), and only while
traffic is split: at weight 0 there is nothing to judge, and a round seen then holds
nothing either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from segue.api.duration import parse_duration
from segue.api.phases import ANALYSED
from segue.api.spec import Analysis
from segue.api.status import GateStatus
from segue.engine.context import Context, Outcome, format_time, seconds
from segue.engine.types import GateRound


@dataclass(frozen=True)
class Trigger:
    """A gate whose failure streak reached its limit in this round."""

    verdict: GateStatus  # the gate's result in the round that reached the limit
    failures: int

    def reason(self) -> str:
        v = self.verdict
        legacy = "" if v.legacy_value is None else f" (legacy {v.legacy_value:.4g})"
        value = "no data" if v.value is None else f"{v.value:.4g}"
        return (
            f"gate {v.name} failed {self.failures}/{v.failure_limit}: value {value}{legacy}, "
            f"bound {v.bound}: {v.message}"
        )


def counts_as_failure(verdict: GateStatus, analysis: Analysis) -> bool:
    if verdict.verdict == "Fail":
        return True
    return verdict.verdict == "Inconclusive" and analysis.no_data == "fail"


def count_round(ctx: Context) -> list[Trigger]:
    """Fold the latest round into ``status.gates``; return the gates that must act now."""
    analysis = ctx.spec.analysis
    st = ctx.status
    if analysis is None:
        st.gates = []
        st.analysis_unreachable_since = None
        return []
    known = {g.name: g for g in st.gates}
    st.gates = [known.get(g.name) or GateStatus(name=g.name) for g in analysis.gates]
    rnd = ctx.obs.gates
    if rnd is None or st.phase not in ANALYSED:
        return []
    if _already_seen(rnd, st.gates):
        return []
    if rnd.error is None:
        st.analysis_unreachable_since = None
    elif st.analysis_unreachable_since is None:
        st.analysis_unreachable_since = rnd.evaluated_at
    if st.weight == 0:
        return []
    results = {r.name: r for r in rnd.results}
    triggers: list[Trigger] = []
    for i, entry in enumerate(st.gates):
        result = results.get(entry.name)
        if result is None or not _newer(rnd.evaluated_at, entry.last_evaluated):
            continue
        failures, no_data = entry.consecutive_failures, entry.consecutive_no_data
        if result.verdict == "Pass":
            failures = no_data = 0
        elif counts_as_failure(result, analysis):
            failures += 1
            if failures >= (result.failure_limit or 1):
                triggers.append(Trigger(result, failures))
        else:
            no_data += 1
        # The provider's status of the gate, with the streaks carried on; a copy, so the
        # round (an observation) stays as it was delivered.
        st.gates[i] = result.model_copy(
            update={
                "last_evaluated": rnd.evaluated_at,
                "consecutive_failures": failures,
                "consecutive_no_data": no_data,
            }
        )
    return triggers


def _newer(evaluated_at: datetime, last: datetime | None) -> bool:
    return last is None or evaluated_at > last


def _already_seen(rnd: GateRound, gates: list[GateStatus]) -> bool:
    """A round not newer than the newest one counted is a duplicate or arrived late: it
    changes nothing, not even the outage clock."""
    seen = [g.last_evaluated for g in gates if g.last_evaluated is not None]
    return bool(seen) and rnd.evaluated_at <= max(seen)


def pausing_gates(ctx: Context) -> list[GateStatus]:
    """Gates with onFailure=pause whose streak is at its limit; a Pass resets the streak."""
    return [
        g
        for g in ctx.status.gates
        if g.on_failure == "pause"
        and g.failure_limit is not None
        and g.consecutive_failures >= g.failure_limit
    ]


def unavailable_blocker(ctx: Context) -> Outcome | None:
    """Paused once the provider has been unreachable for longer than unreachableLimit."""
    analysis = ctx.spec.analysis
    since = ctx.status.analysis_unreachable_since
    if analysis is None or since is None:
        return None
    limit = parse_duration(analysis.unreachable_limit)
    left = seconds(since + limit - ctx.now)
    if left >= 0:
        ctx.wake_in(left)
        return None
    error = ctx.obs.gates.error if ctx.obs.gates is not None else None
    return Outcome(
        "Paused",
        f"analysis unreachable since {format_time(since)}"
        + (f" ({error})" if error else "")
        + "; resumes when a round succeeds",
        paused_reason="AnalysisUnavailable",
        reason="AnalysisUnavailable",
        requeue=_interval(analysis),
    )


def failing_blocker(ctx: Context) -> Outcome | None:
    """A gate failing in the latest round holds everything, even a confirmed weight.

    Not at weight 0: rounds run and count only while the new version has traffic, so a
    round seen at 0 was evaluated before traffic left it (before a restart, say) and says
    nothing about what comes next; holding on it would wait for a round that never runs.
    """
    analysis = ctx.spec.analysis
    rnd = ctx.obs.gates
    if analysis is None or rnd is None or ctx.current_weight() == 0:
        return None
    names = {g.name for g in analysis.gates}
    failing = [v for v in rnd.results if v.name in names and counts_as_failure(v, analysis)]
    if not failing:
        return None
    streaks = {g.name: g.consecutive_failures for g in ctx.status.gates}
    text = "; ".join(
        f"gate {v.name} failing ({streaks.get(v.name, 0)}/{v.failure_limit}): {v.message}"
        for v in failing
    )
    return Outcome(
        "Progressing",
        f"holding: {text}",
        reason="GateFailing",
        requeue=_interval(analysis),
    )


def advance_blocker(ctx: Context) -> Outcome | None:
    """What stops the Rollout from moving past the current step or raising the weight:
    with analysis, the latest round must be evaluated at or after stepStartedAt and every
    gate in it must pass. No data never promotes."""
    analysis = ctx.spec.analysis
    if analysis is None:
        return None
    if ctx.status.target_weight == 0 and ctx.current_weight() == 0:
        # No traffic on the new version yet (a pause or approval before the first
        # setWeight): there is nothing to analyse, and rounds only run with traffic.
        return None
    interval = _interval(analysis)
    rnd: GateRound | None = ctx.obs.gates
    st = ctx.status
    if rnd is None:
        return Outcome(
            "Progressing",
            "waiting for the first analysis round",
            reason="WaitingForAnalysis",
            requeue=interval,
        )
    if rnd.error is not None:
        return Outcome(
            "Progressing",
            f"waiting for analysis: {rnd.error}",
            reason="AnalysisUnavailable",
            requeue=interval,
        )
    if st.step_started_at is not None and rnd.evaluated_at < st.step_started_at:
        return Outcome(
            "Progressing",
            f"waiting for an analysis round after {format_time(st.step_started_at)}",
            reason="WaitingForAnalysis",
            requeue=interval,
        )
    blocked = failing_blocker(ctx)
    if blocked is not None:
        return blocked
    results = {r.name: r for r in rnd.results}
    errors: list[str] = []
    no_data: list[str] = []
    for gate in analysis.gates:
        verdict = results.get(gate.name)
        if verdict is None:
            no_data.append(f"gate {gate.name}: not evaluated")
        elif verdict.verdict == "Error":
            errors.append(f"gate {gate.name}: {verdict.message}")
        elif verdict.verdict != "Pass":
            no_data.append(f"gate {gate.name}: {verdict.message}")
    if errors:
        return Outcome(
            "Paused",
            f"query error, not promoting: {'; '.join(errors)}",
            paused_reason="QueryError",
            reason="QueryError",
            requeue=interval,
        )
    if no_data:
        return Outcome(
            "Paused",
            f"no data, not promoting: {'; '.join(no_data)}",
            paused_reason="NoData",
            reason="NoData",
            requeue=interval,
        )
    return None


def _interval(analysis: Analysis) -> float:
    return seconds(parse_duration(analysis.interval))
