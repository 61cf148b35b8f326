"""kstatus-compatible conditions, derived from the decided status.

- Ready: True only when Succeeded.
- Progressing and Reconciling: True while the engine works towards a goal.
- Stalled: True when a person has to act: missing references (MissingReference), an
  object Segue may not write to (NotManaged: label it ``segue.dev/managed=true``), an
  invalid spec, a dependency that rolled back (DependencyRolledBack: it holds the start
  until it is retried and succeeds), or a rollback that ended (retry, or ship a new
  revision).
- Healthy: the gates: True all pass, False one is failing, Unknown no data or no analysis.
- Degraded: True when the legacy version carries traffic with fewer ready pods than its
  share needs (reason LegacyCapacityLost; see ``references.legacy_capacity``).

``lastTransitionTime`` moves only when a condition's status flips.
"""

from __future__ import annotations

from datetime import datetime

from segue.api.phases import ACTIVE
from segue.api.status import Condition, ConditionStatus, RolloutStatus


def update(
    status: RolloutStatus,
    *,
    now: datetime,
    generation: int,
    progress_reason: str | None,
    analysis_configured: bool,
    missing: str | None = None,
    unmanaged: str | None = None,
    invalid: str | None = None,
    degraded: str | None = None,
    dependency: str | None = None,
) -> None:
    phase = status.phase or "Pending"
    message = status.message or ""
    new: list[Condition] = []

    def put(type_: str, value: ConditionStatus, reason: str, text: str) -> None:
        old = status.condition(type_)
        flipped = old is None or old.status != value
        new.append(
            Condition(
                type=type_,
                status=value,
                reason=reason,
                message=text,
                last_transition_time=now if flipped or old is None else old.last_transition_time,
                observed_generation=generation,
            )
        )

    put("Ready", _b(phase == "Succeeded"), phase, message)
    working = phase in ACTIVE and missing is None and unmanaged is None and dependency is None
    reason = progress_reason or phase
    idle = "DependencyRolledBack" if dependency is not None else phase
    put("Progressing", _b(working), reason if working else idle, message)
    put("Reconciling", _b(working), reason if working else idle, message)
    if missing is not None:
        put("Stalled", "True", "MissingReference", missing)
    elif unmanaged is not None:
        put("Stalled", "True", "NotManaged", unmanaged)
    elif invalid is not None:
        put("Stalled", "True", "InvalidSpec", invalid)
    elif dependency is not None:
        put("Stalled", "True", "DependencyRolledBack", dependency)
    elif phase in ("Failed", "RolledBack"):
        put("Stalled", "True", phase, message)
    else:
        put("Stalled", "False", phase, "")
    put("Healthy", *_health(status, analysis_configured))
    if degraded is not None:
        put("Degraded", "True", "LegacyCapacityLost", degraded)
    else:
        put("Degraded", "False", "CapacityAvailable", "")
    status.conditions = new


def _b(value: bool) -> ConditionStatus:
    return "True" if value else "False"


def _health(status: RolloutStatus, analysis_configured: bool) -> tuple[ConditionStatus, str, str]:
    if not analysis_configured:
        return "Unknown", "NoAnalysis", "no analysis configured"
    failing = [g for g in status.gates if g.verdict == "Fail"]
    if failing:
        text = "; ".join(f"gate {g.name}: {g.message or g.bound}" for g in failing)
        return "False", "GateFailing", text
    if status.gates and all(g.verdict == "Pass" for g in status.gates):
        return "True", "GatesPassing", f"all {len(status.gates)} gates pass"
    waiting = [g.name for g in status.gates if g.verdict != "Pass"]
    return "Unknown", "NoData", f"no verdict yet for gate(s) {', '.join(waiting)}"
