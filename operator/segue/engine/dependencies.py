"""What orders a Rollout's start: dependsOn Rollouts (or a Migration's waves) that have not
succeeded yet, and those that rolled back instead.

A dependency still on its way is a wait (``Waiting``, reason ``WaitingForDependencies``; a
member of a Migration whose wave has not started: ``WaitingForMigration``). A
dependency that rolled back (``RolledBack`` or ``Failed``) will not succeed unless a person
retries it, so the Rollout says it is blocked in a way kstatus, ``kubectl wait`` and GitOps
tools read: condition ``Stalled=True`` with reason ``DependencyRolledBack``, Progressing
False, and one Warning Event (again only when what blocks it changes). A dependency's phase
change is a watch event: no timed wake-up.
"""

from __future__ import annotations

from typing import Final

from segue.engine.context import Context, Outcome

DEPENDENCY_ROLLED_BACK: Final = "DependencyRolledBack"
WAITING_FOR_DEPENDENCIES: Final = "WaitingForDependencies"
WAITING_FOR_MIGRATION: Final = "WaitingForMigration"


def rolled_back_dependency(description: str) -> str:
    """The message for a Rollout held by ``description`` (what rolled back)."""
    return (
        f"blocked: {description}; it must be retried (segue.dev/retry) and succeed "
        "before this Rollout starts"
    )


def blocker(ctx: Context) -> Outcome | None:
    """Where a Rollout that has not started waits, or None when it may start."""
    obs = ctx.obs
    if obs.dependencies_rolled_back:
        return Outcome(
            "Waiting",
            rolled_back_dependency("; ".join(obs.dependencies_rolled_back)),
            reason=DEPENDENCY_ROLLED_BACK,
        )
    if obs.migration_waiting:
        return Outcome("Waiting", obs.migration_waiting, reason=WAITING_FOR_MIGRATION)
    if obs.dependencies_pending:
        return Outcome(
            "Waiting",
            f"waiting for Rollouts to succeed first: {', '.join(obs.dependencies_pending)}",
            reason=WAITING_FOR_DEPENDENCIES,
        )
    return None


def stalled(ctx: Context) -> str | None:
    """The Stalled message while a rolled-back dependency holds the start, else None."""
    if ctx.status.phase == "Waiting" and ctx.progress_reason == DEPENDENCY_ROLLED_BACK:
        return ctx.status.message or DEPENDENCY_ROLLED_BACK
    return None


def announce(ctx: Context, blocked: str | None) -> None:
    """One Warning Event when a rolled-back dependency starts to hold the Rollout (or what
    holds it changes); none while it stays the same."""
    if blocked is None:
        return
    old = ctx.status.condition("Stalled")
    if old is None or old.reason != DEPENDENCY_ROLLED_BACK or old.message != blocked:
        ctx.event("Warning", DEPENDENCY_ROLLED_BACK, blocked)
