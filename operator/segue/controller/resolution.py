"""The Rollout context of a round, and the check that its gates can run at all.

The operator runs :func:`unresolvable_gates` on every pass before it decides (a Rollout
whose gates cannot run is handled as an invalid spec: Failed, no traffic moves), and
``segue lint`` runs the very same function offline. Both plan each gate exactly as an
analysis round does (the provider's ``plan``, from the catalog). Imports nothing that does
I/O, so the CLI can use it without the operator's clients.
"""

from __future__ import annotations

from segue.analysis.providers import catalog
from segue.analysis.providers.base import GateProblem, Provider, RoundContext
from segue.api.spec import RolloutSpec


def round_context(namespace: str, name: str, spec: RolloutSpec, weight: float) -> RoundContext:
    assert spec.analysis is not None
    return RoundContext(
        namespace=namespace,
        rollout=name,
        legacy_version=spec.legacy.effective_version(),
        new_version=spec.new.effective_version(),
        interval=spec.analysis.interval,
        weight=weight,
    )


def unresolvable_gates(
    spec: RolloutSpec, namespace: str, name: str, provider: Provider | None = None
) -> list[GateProblem]:
    """The gates of ``spec`` that no round could run, each with the field at fault, as
    ``provider`` plans them (by default the one whose section the spec sets, else the
    catalog's default; the operator passes the provider of a named MetricProvider)."""
    if spec.analysis is None:
        return []
    context = round_context(namespace, name, spec, 0.0)
    chosen = provider or catalog.provider_of(spec.analysis)
    return chosen.plan(spec.analysis.gates, context)


def field_path(loc: tuple[str | int, ...]) -> str:
    """``("spec", "analysis", "gates", 0, "labels", "metric")`` ->
    ``spec.analysis.gates[0].labels.metric``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def describe(problems: list[GateProblem]) -> str:
    """One line for status and Events: ``<field>: <why>; ...``."""
    return "; ".join(f"{field_path(p.loc)}: {p.message}" for p in problems)
