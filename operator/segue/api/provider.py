"""The MetricProvider: a metric provider declared by the platform team, cluster-scoped.

A Rollout names one (``spec.analysis.providerRef``) instead of writing an address and
credentials itself. Only the platform team may create MetricProviders (they are
cluster-scoped), so a bearer token goes only to an address the platform declared, and is
read from a Secret in the namespace the MetricProvider names, never from the Rollout's.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import AfterValidator, ConfigDict, Field, JsonValue, StringConstraints

from segue.api.address import MAX_ADDRESS_LENGTH, AddressRule
from segue.api.base import LabelName, ObjectName, SpecModel
from segue.api.duration import DurationBounds, DurationText

PROVIDER_KIND: Final = "MetricProvider"
PROVIDER_PLURAL: Final = "metricproviders"

PROVIDER_ADDRESS_RULE: Final = AddressRule("spec.prometheus.address")
MSG_PROVIDER_ADDRESS: Final = PROVIDER_ADDRESS_RULE.message
PROVIDER_TIMEOUT_BOUNDS: Final = DurationBounds("spec.prometheus.timeout", "100ms", "30s")

ProviderAddress = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ADDRESS_LENGTH),
    AfterValidator(PROVIDER_ADDRESS_RULE.check),
]
ProviderTimeout = Annotated[DurationText, AfterValidator(PROVIDER_TIMEOUT_BOUNDS.check)]


def _validations(*rules: dict[str, str]) -> ConfigDict:
    cel: list[JsonValue] = [dict(r) for r in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": cel})


class ProviderSecretRef(SpecModel):
    """The Secret with the bearer token and CA bundle, in a namespace the platform chose."""

    namespace: LabelName = Field(description="Namespace of the Secret.")
    name: ObjectName = Field(description="Name of the Secret.")
    token_key: str = Field("token", max_length=253, description="Key of the bearer token.")
    ca_key: str = Field("ca.crt", max_length=253, description="Key of the CA bundle.")


class PrometheusEndpoint(SpecModel):
    """A Prometheus server: where it is, how long a query may take, its credentials."""

    model_config = _validations(PROVIDER_ADDRESS_RULE.cel(), PROVIDER_TIMEOUT_BOUNDS.cel("timeout"))

    address: ProviderAddress = Field(
        description="Base URL: http or https, no user info, query string or fragment."
    )
    timeout: ProviderTimeout = Field(
        "5s", description="Timeout of a Prometheus query: 100ms to 30s."
    )
    secret_ref: ProviderSecretRef | None = Field(
        None, description="Bearer token and CA bundle; none: no credentials are sent."
    )


class MetricProviderSpec(SpecModel):
    """Where Rollouts that name this provider send their queries."""

    prometheus: PrometheusEndpoint

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
