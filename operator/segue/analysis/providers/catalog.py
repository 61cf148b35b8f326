"""The metric providers Segue knows, one line each, and what the API assembles from them:
one optional section per provider in ``spec.analysis``, one in a MetricProvider's spec, the
gate template names and their label rules.

Pure: ``segue.api`` imports it. The first provider is the default one: it serves Rollouts
that name neither a provider section nor a ``providerRef`` (at the operator's default
address).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from segue.analysis.providers.base import Provider
from segue.analysis.providers.prometheus.provider import PROMETHEUS

if TYPE_CHECKING:
    from segue.api.base import SpecModel

PROVIDERS: Final[tuple[Provider, ...]] = (
    PROMETHEUS,
)  # fmt: skip

DEFAULT: Final = PROVIDERS[0]
KEYS: Final = tuple(p.key for p in PROVIDERS)
TEMPLATE_NAMES: Final = tuple(name for p in PROVIDERS for name in p.templates)
GATE_RULES: Final = tuple(rule for p in PROVIDERS for rule in p.gate_rules)

if len(set(KEYS)) != len(KEYS):
    raise ValueError(f"metric provider keys must be unique: {KEYS}")
if len(set(TEMPLATE_NAMES)) != len(TEMPLATE_NAMES):
    raise ValueError(f"gate template names must be unique across providers: {TEMPLATE_NAMES}")


def by_key(key: str) -> Provider:
    for provider in PROVIDERS:
        if provider.key == key:
            return provider
    raise KeyError(f"no metric provider {key!r}; known: {', '.join(KEYS)}")


def sections(spec: object) -> list[tuple[Provider, SpecModel]]:
    """The provider sections set on ``spec`` (an ``Analysis`` or a ``MetricProviderSpec``:
    both have one optional attribute per provider key)."""
    found = []
    for provider in PROVIDERS:
        section = getattr(spec, provider.key, None)
        if section is not None:
            found.append((provider, section))
    return found


def inline_section(analysis: object) -> tuple[Provider, SpecModel] | None:
    """The provider section a Rollout's ``spec.analysis`` sets (the API allows at most
    one), or None."""
    found = sections(analysis)
    return found[0] if found else None


def endpoint_section(spec: object) -> tuple[Provider, SpecModel]:
    """The provider section of a MetricProvider's spec (the API requires exactly one)."""
    found = sections(spec)
    if len(found) != 1:
        raise ValueError(f"a MetricProvider sets exactly one of {', '.join(KEYS)}")
    return found[0]


def provider_of(analysis: object) -> Provider:
    """The provider that plans the gates of ``spec.analysis`` when nothing else says: the
    one whose section it sets, else the default."""
    found = inline_section(analysis)
    return found[0] if found is not None else DEFAULT
