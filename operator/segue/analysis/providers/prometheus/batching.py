"""Which Prometheus gates can share a query, and the batched query that serves them. Pure.

A gate on a built-in template batches with every gate of the same template and labels (its
``app`` value aside) and the same rendered ``window``: a :class:`Family`. Each Rollout's
version is a :class:`Member`, the values of the template's app, version and (if set)
namespace labels. The batched query selects the members' series with regex alternations
over their values (each value escaped for RE2, then for the string literal it stands in)
and keeps those labels in every aggregation (``templates`` writes each template's batched
form), so the series of a member is exactly what its single query measures.

A query has at most :data:`MAX_MEMBERS` members (100 Rollouts, two versions each) and
:data:`MAX_MATCHER_CHARS` of alternations; more members make more queries. A custom query,
and a template whose ``errorCodes`` uses placeholders, run alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from segue.analysis.batches import BatchRef, Series
from segue.analysis.errors import UnusableResult
from segue.analysis.providers.prometheus.templates import (
    TEMPLATES,
    batched_template_query,
    merged_labels,
)
from segue.analysis.providers.prometheus.templating import (
    TemplateError,
    escape_string_literal,
    regex_escape,
    render_value,
    validate_duration,
)

if TYPE_CHECKING:
    from segue.analysis.providers.base import RoundContext
    from segue.api.spec import Gate

MAX_MEMBERS: Final = 200
MAX_MATCHER_CHARS: Final = 4096


@dataclass(frozen=True, order=True)
class Member:
    """One Rollout version's series: its app, version and namespace label values (namespace
    "" when the template matches no namespace label)."""

    app: str
    version: str
    namespace: str = ""


@dataclass(frozen=True)
class Family:
    """Gates that share a batched query: one template, the same labels apart from ``app``,
    and the same rendered window."""

    template: str
    labels: tuple[tuple[str, str], ...]  # every template label but app, window rendered

    @property
    def _labels(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def keys(self) -> tuple[str, ...]:
        """The label names a member's series is told apart by, as in ``by (...)``."""
        v = self._labels
        names = [v["appLabel"], v["versionLabel"]]
        if v["namespaceLabel"]:
            names.append(v["namespaceLabel"])
        return tuple(names)

    def chunks(self, members: Iterable[Hashable]) -> list[tuple[str, tuple[Hashable, ...]]]:
        ordered = sorted(set(_members(members)), key=lambda m: (m.namespace, m.app, m.version))
        out: list[tuple[str, tuple[Hashable, ...]]] = []
        part: list[Member] = []
        seen: set[tuple[int, str]] = set()
        chars = 0
        for member in ordered:
            new = {(i, v) for i, v in enumerate(_values(member))} - seen
            grows = sum(len(_escaped(v)) + 1 for _, v in new)
            if part and (len(part) >= MAX_MEMBERS or chars + grows > MAX_MATCHER_CHARS):
                out.append((self.query(part), tuple(part)))
                part, seen, chars = [], set(), 0
                new = set(enumerate(_values(member)))
                grows = sum(len(_escaped(v)) + 1 for _, v in new)
            part.append(member)
            seen |= new
            chars += grows
        if part:
            out.append((self.query(part), tuple(part)))
        return out

    def query(self, members: Sequence[Member]) -> str:
        """The batched query whose answer holds a series for each of ``members`` that has
        data."""
        v = self._labels
        matchers = [
            f'{v["appLabel"]}=~"{_alternation(m.app for m in members)}"',
            f'{v["versionLabel"]}=~"{_alternation(m.version for m in members)}"',
        ]
        if v["namespaceLabel"]:
            matchers.append(
                f'{v["namespaceLabel"]}=~"{_alternation(m.namespace for m in members)}"'
            )
        labels = {k: val for k, val in v.items() if k != "window"}
        return batched_template_query(
            self.template,
            labels,
            selector=",".join(matchers),
            by=", ".join(self.keys),
            window=v["window"],
        )

    def pick(self, series: Sequence[Series], member: Hashable) -> float | None:
        (m,) = _members([member])
        want = (m.app, m.version, m.namespace)[: len(self.keys)]
        found = [
            value for labels, value in series if tuple(labels.get(k, "") for k in self.keys) == want
        ]
        if len(found) > 1:
            raise UnusableResult(f"the batched query returns {len(found)} series for one version")
        return found[0] if found else None


def batch_refs(gate: Gate, ctx: RoundContext) -> tuple[BatchRef, BatchRef] | None:
    """The batch refs of ``gate`` (as it runs: resolved) for the new and the legacy version,
    or None when it runs alone: a custom query, placeholders in ``errorCodes``, label names
    that coincide, or a value that cannot be rendered."""
    if gate.template is None or gate.template not in TEMPLATES:
        return None
    v = merged_labels(gate.labels)
    if "{{" in v["errorCodes"]:
        return None
    names = [v["appLabel"], v["versionLabel"], v["namespaceLabel"]]
    names = [n for n in names if n]
    if len(set(names)) != len(names) or v["codeLabel"] in names:
        return None
    values = {"namespace": ctx.namespace, "rollout": ctx.rollout, "interval": ctx.interval}
    try:
        window = render_value(v["window"], version="v", **values, field="window")
        validate_duration("template label window", window)
        members = tuple(
            Member(
                app=render_value(v["app"], version=version, **values, field="app"),
                version=version,
                namespace=ctx.namespace if v["namespaceLabel"] else "",
            )
            for version in (ctx.new_version, ctx.legacy_version)
        )
    except TemplateError:
        return None
    rest = {k: val for k, val in v.items() if k != "app"}
    rest["window"] = window
    family = Family(gate.template, tuple(sorted(rest.items())))
    return BatchRef(family, members[0]), BatchRef(family, members[1])


def _members(members: Iterable[Hashable]) -> list[Member]:
    out = []
    for m in members:
        if not isinstance(m, Member):
            raise TypeError(f"not a Prometheus batch member: {m!r}")
        out.append(m)
    return out


def _values(member: Member) -> tuple[str, str, str]:
    return (member.app, member.version, member.namespace)


def _escaped(value: str) -> str:
    return escape_string_literal(regex_escape(value))


def _alternation(values: Iterable[str]) -> str:
    """An RE2 alternation matching exactly these values, inside a string literal."""
    return "|".join(_escaped(v) for v in sorted(set(values)))
