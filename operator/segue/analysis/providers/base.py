"""What every metric provider declares, as plain values: its spec sections and the checks
on them, its gate templates, and how it plans gates. Pure: the API assembles
``spec.analysis`` and the MetricProvider kind from these, and ``segue lint`` plans gates
with them.

The running half of a provider (operator flags, credentials, queries) is its ``runtime``
module, named by :attr:`Provider.runtime` and loaded by ``registry`` in the operator only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segue.api.base import SpecModel

if TYPE_CHECKING:
    from segue.api.spec import Gate

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class RoundContext:
    """The Rollout context a provider needs for a round: where and what the Rollout is, its
    versions, its analysis interval, and the traffic share of the new version (``weight``,
    a percentage 0..100; legacy has the rest)."""

    namespace: str
    rollout: str
    legacy_version: str
    new_version: str
    interval: str
    weight: float


@dataclass(frozen=True)
class GateProblem:
    """Why the gate at ``index`` cannot run; ``loc`` is the field at fault in the Rollout."""

    index: int
    name: str
    loc: Loc
    message: str


@dataclass(frozen=True)
class Provider:
    """One metric provider, as the API and ``segue lint`` see it.

    - ``key``: its section in ``spec.analysis`` and in a MetricProvider's spec
      (``prometheus``); ``title`` names it in messages (``Prometheus``).
    - ``inline``: the model of ``spec.analysis.<key>``, written by whoever edits the Rollout;
      ``endpoint``: the model of a MetricProvider's ``spec.<key>``, written by the platform
      team. ``columns``: the MetricProvider's printer columns.
    - ``templates``: the names a gate's ``template`` may take; ``gate_rules``: the CEL rules
      on a gate that check its template ``labels``.
    - ``plan``: every gate planned as a round would plan it, with what cannot run.
    - ``runtime``: the module holding its running half (``RUNTIME``, see
      ``providers.runtime``).
    """

    key: str
    title: str
    inline: type[SpecModel]
    endpoint: type[SpecModel]
    columns: tuple[dict[str, Any], ...]
    templates: tuple[str, ...]
    gate_rules: tuple[dict[str, str], ...]
    plan: Callable[[Sequence[Gate], RoundContext], list[GateProblem]]
    runtime: str
