"""The objects a Rollout references: what a missing one means, and whether the legacy
Deployment still has the pods its share of traffic needs.

Annotations and gates are handled before any of this (``decide``), so an abort or a gate
rollback is recorded whatever is missing; what is decided here only narrows what may move:

- the new Deployment gone while traffic is on it: an immediate rollback, and weight 0 is
  asked at once without a capacity check (its pods are gone: legacy is strictly better);
- the routing object or the legacy Deployment gone: Stalled, no weight moves; a recorded
  rollback takes effect the moment the object is back;
- an object the router writes to not opted in (``segue.dev/managed=true`` missing while
  the operator requires it): Stalled (``NotManaged``) like a missing routing object, the
  message naming the object and the ``kubectl label`` that opts it in;
- the legacy Deployment short of ready pods for its share: condition Degraded.
"""

from __future__ import annotations

from itertools import groupby
from typing import Final

from segue import MANAGED_LABEL, MANAGED_VALUE
from segue.api.phases import ANALYSED, STEPPING, TERMINAL
from segue.api.spec import RolloutSpec
from segue.engine import rollback
from segue.engine.context import Context
from segue.engine.types import ObjectRef

MISSING_REFERENCE: Final = "MissingReference"
NOT_MANAGED: Final = "NotManaged"


def routing_object(spec: RolloutSpec) -> str:
    return spec.traffic.settings().routing_object()


def describe_missing(ctx: Context) -> str | None:
    """``missing: ...`` naming every missing object, or None when nothing is missing.

    After success the legacy Deployment may go (that is the cleanup): a Succeeded Rollout
    whose only missing object is legacy is not stalled (an abort then says there is
    nothing to roll back to). With a router that scales, the Deployments are its routing
    objects, so its "not found" is the same legacy Deployment."""
    obs, spec = ctx.obs, ctx.spec
    if not obs.any_missing:
        return None
    if (
        ctx.status.phase == "Succeeded"
        and obs.legacy_missing
        and not obs.new_missing
        and (not obs.router_missing or obs.router_manages_capacity)
        and not obs.deleting
    ):
        return None
    parts = list(obs.missing)
    if not parts:  # flags without descriptions: name the objects from the spec
        if obs.legacy_missing:
            parts.append(f"Deployment {spec.legacy.deployment} (legacy)")
        if obs.new_missing:
            parts.append(f"Deployment {spec.new.deployment} (new)")
        if obs.router_missing:
            parts.append(routing_object(spec))
    return "missing: " + ", ".join(parts)


def not_labelled(refs: tuple[ObjectRef, ...]) -> str | None:
    """``<kind> <ns>/<name> is not labelled segue.dev/managed=true`` for every object in
    ``refs`` (None when empty)."""
    if not refs:
        return None
    names = ", ".join(f"{kind} {namespace}/{name}" for kind, namespace, name in refs)
    verb = "is" if len(refs) == 1 else "are"
    return f"{names} {verb} not labelled {MANAGED_LABEL}={MANAGED_VALUE}"


def describe_unmanaged(ctx: Context) -> str | None:
    """``not managed: ...`` naming the objects the router would write to that are not
    opted in, and the command that opts them in; None when there are none."""
    refs = ctx.obs.unmanaged
    what = not_labelled(refs)
    if what is None:
        return None
    fixes = []
    for (kind, namespace), group in groupby(sorted(refs), key=lambda r: (r[0], r[1])):
        names = " ".join(name for _, _, name in group)
        fixes.append(
            f"kubectl label {kind.lower()} {names} -n {namespace} {MANAGED_LABEL}={MANAGED_VALUE}"
        )
    return (
        f"not managed: {what}, and this operator writes only to labelled objects; "
        f"to let Segue move traffic, opt {'it' if len(refs) == 1 else 'them'} in: "
        + " && ".join(fixes)
    )


def new_version_gone(ctx: Context) -> str:
    return f"Deployment {ctx.spec.new.deployment} (new) not found: all traffic returned to legacy"


def leave_a_missing_new_version(ctx: Context, last_weight: int) -> None:
    """The new Deployment is gone while traffic is (or may be) on it: roll back at once,
    an abort or not. A graceful rollback becomes immediate.

    ``last_weight`` is the weight the status held before this observation: a router that
    scales reads 0 as soon as the new Deployment is gone, yet its legacy side is still at
    the size it had for its share and must grow back."""
    st = ctx.status
    weight = max(last_weight, ctx.current_weight())
    if not ctx.obs.new_missing or st.phase not in ANALYSED or weight == 0:
        return
    if st.phase in STEPPING:
        rollback.start(ctx, "immediate", new_version_gone(ctx), "segue", from_weight=weight)
    else:
        rollback.escalate(ctx, new_version_gone(ctx), actor="segue")


def stall(ctx: Context, missing: str, *, reason: str = MISSING_REFERENCE) -> None:
    """Something referenced is missing (``MissingReference``) or may not be written to
    (``NotManaged``). Only a rollback away from a vanished new Deployment still moves
    traffic, and only through objects Segue may write; everything else waits for the
    object or its label (a watch event: no timed wake-up). A rollback recorded meanwhile
    is said to wait, so nothing is silently lost.

    That rollback asks for weight 0 on every pass until it ends, even when the router
    already reads 0: a router that scales then grows legacy back to its full size."""
    st, obs = ctx.status, ctx.obs
    rolling_back = st.phase == "RollingBack"
    if (
        rolling_back
        and obs.new_missing
        and not obs.router_missing
        and not obs.legacy_missing
        and not obs.unmanaged
        and obs.router_weight is not None
    ):
        st.target_weight = 0
        ctx.set_weight(0)
        rollback.tick(ctx)
    elif st.phase in TERMINAL:
        pass  # the outcome stays the message; the Stalled condition says what is missing
    elif rolling_back:
        until = "it is labelled" if reason == NOT_MANAGED else "it is back"
        st.message = f"{missing}; the rollback is recorded and takes effect once {until}"
    else:
        st.message = missing
    old = st.condition("Stalled")
    if old is None or old.status != "True" or old.message != missing:
        ctx.event("Warning", reason, missing)


def deletion_blocker(ctx: Context) -> str | None:
    """Why traffic cannot be sent back to legacy right now (None: it can)."""
    obs, spec = ctx.obs, ctx.spec
    if obs.router_missing:
        return f"{routing_object(spec)} not found"
    if obs.router_weight is None:
        return "cannot read the router's weight"
    if obs.legacy_missing:
        return f"Deployment {spec.legacy.deployment} (legacy) not found"
    unmanaged = not_labelled(obs.unmanaged)
    if unmanaged is not None:
        return unmanaged
    if obs.router_manages_capacity or obs.new_missing or obs.legacy_ready > 0:
        return None
    return f"no ready pods in Deployment {spec.legacy.deployment} (legacy)"


def legacy_capacity(ctx: Context) -> str | None:
    """Why the legacy Deployment cannot carry its share of traffic (None: it can).

    Its share is ``100 - weight`` percent of what ``status.legacyReplicas`` pods (its
    replica count when the plan started) carried: it needs
    ``ceil(legacyReplicas * (100 - weight) / 100)`` ready pods, at least 1 while
    ``weight < 100``. A router that scales (replicas) changes the legacy's size on
    purpose; it is judged only when no legacy pod is ready at all. Judged while traffic is
    split (ANALYSED phases), not while deleting.
    """
    st, obs = ctx.status, ctx.obs
    if st.phase not in ANALYSED or obs.deleting:
        return None
    if st.legacy_replicas is None and not obs.legacy_missing:
        st.legacy_replicas = obs.legacy_desired  # a Rollout started before the field existed
    weight = ctx.current_weight()
    if weight >= 100:
        return None
    share = 100 - weight
    name = ctx.spec.legacy.deployment
    if obs.legacy_missing:
        return f"Deployment {name} (legacy) not found while it carries {share}% of traffic"
    if obs.router_manages_capacity:
        if obs.legacy_ready > 0:
            return None
        return f"Deployment {name} (legacy) has no ready pods while it carries {share}% of traffic"
    replicas = st.legacy_replicas or 0
    needed = max(1, (replicas * share + 99) // 100)
    if obs.legacy_ready >= needed:
        return None
    return (
        f"Deployment {name} (legacy) has {obs.legacy_ready} ready pod(s); its {share}% "
        f"share of traffic needs {needed} ({replicas} replicas when the plan started)"
    )


def announce_capacity(ctx: Context, degraded: str | None) -> None:
    """One Event per flip of the Degraded condition (a recovery is announced only while
    the legacy is still judged, not when the Rollout merely finished)."""
    old = ctx.status.condition("Degraded")
    was = old is not None and old.status == "True"
    judged = ctx.status.phase in ANALYSED and not ctx.obs.deleting
    if degraded is not None and not was:
        ctx.event("Warning", "LegacyCapacityLost", degraded)
    elif degraded is None and was and judged:
        ctx.event(
            "Normal", "LegacyCapacityRestored", "the legacy version has the pods its share needs"
        )
