"""The MetricProvider: a metric provider declared by the platform team, cluster-scoped.

A Rollout names one (``spec.analysis.providerRef``) instead of writing an address and
credentials itself. Only the platform team may create MetricProviders (they are
cluster-scoped), so a bearer token goes only to an address the platform declared, and is
read from a Secret in the namespace the MetricProvider names, never from the Rollout's.

Its spec has one section per metric provider of the catalog (``spec.prometheus``, ...),
exactly one of which is set; each provider owns the model of its section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from pydantic import ConfigDict, Field, JsonValue, create_model, model_validator

from segue.analysis.providers import catalog
from segue.api.base import SpecModel

PROVIDER_KIND: Final = "MetricProvider"
PROVIDER_PLURAL: Final = "metricproviders"

MSG_ONE_PROVIDER: Final = f"spec: set exactly one of {', '.join(catalog.KEYS)}"
# The printer columns of every provider's section.
PROVIDER_COLUMNS: Final = tuple(column for p in catalog.PROVIDERS for column in p.columns)


def _one_provider_rule() -> ConfigDict:
    """With several providers, a CEL rule for "exactly one section"; with one, its section
    is simply required."""
    if len(catalog.KEYS) == 1:
        return ConfigDict()
    count = " + ".join(f"(has(self.{key}) ? 1 : 0)" for key in catalog.KEYS)
    cel: list[JsonValue] = [{"rule": f"{count} == 1", "message": MSG_ONE_PROVIDER}]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": cel})


class _MetricProviderBase(SpecModel):
    """Where Rollouts that name this provider send their queries."""

    model_config = _one_provider_rule()

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @model_validator(mode="after")
    def _one(self) -> _MetricProviderBase:
        if len(catalog.sections(self)) != 1:
            raise ValueError(MSG_ONE_PROVIDER)
        return self


if TYPE_CHECKING:
    MetricProviderSpec = _MetricProviderBase
else:
    _ONLY: Final = len(catalog.PROVIDERS) == 1
    MetricProviderSpec = create_model(
        "MetricProviderSpec",
        __base__=_MetricProviderBase,
        __doc__=_MetricProviderBase.__doc__,
        __module__=__name__,
        **{
            p.key: (p.endpoint, Field(...)) if _ONLY else (p.endpoint | None, None)
            for p in catalog.PROVIDERS
        },
    )
