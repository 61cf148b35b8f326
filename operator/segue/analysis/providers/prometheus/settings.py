"""Prometheus' spec sections: ``spec.analysis.prometheus`` of a Rollout and
``spec.prometheus`` of a MetricProvider, with their checks written twice, as pydantic
validators and as CEL rules with the same messages.

Pure: the API assembles its kinds from these models.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, ConfigDict, Field, JsonValue, StringConstraints

from segue.api.address import MAX_ADDRESS_LENGTH, AddressRule
from segue.api.base import LabelName, ObjectName, SpecModel
from segue.api.duration import DurationBounds, DurationText

KEY: Final = "prometheus"

# A Rollout's own section: spec.analysis.prometheus.
ADDRESS_RULE: Final = AddressRule("spec.analysis.prometheus.address")
MSG_ADDRESS: Final = ADDRESS_RULE.message
TIMEOUT_BOUNDS: Final = DurationBounds("spec.analysis.prometheus.timeout", "100ms", "30s")
MSG_TIMEOUT_BOUNDS: Final = TIMEOUT_BOUNDS.message

# A MetricProvider's section: spec.prometheus.
PROVIDER_ADDRESS_RULE: Final = AddressRule("spec.prometheus.address")
MSG_PROVIDER_ADDRESS: Final = PROVIDER_ADDRESS_RULE.message
PROVIDER_TIMEOUT_BOUNDS: Final = DurationBounds("spec.prometheus.timeout", "100ms", "30s")


def _validations(*rules: dict[str, str]) -> ConfigDict:
    cel: list[JsonValue] = [dict(r) for r in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": cel})


Address = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ADDRESS_LENGTH),
    AfterValidator(ADDRESS_RULE.check),
]
TimeoutDuration = Annotated[DurationText, AfterValidator(TIMEOUT_BOUNDS.check)]
ProviderAddress = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ADDRESS_LENGTH),
    AfterValidator(PROVIDER_ADDRESS_RULE.check),
]
ProviderTimeout = Annotated[DurationText, AfterValidator(PROVIDER_TIMEOUT_BOUNDS.check)]


class SecretRef(SpecModel):
    """A Secret in the Rollout's namespace with Prometheus credentials. Used only together
    with an address the operator allows (``--allow-prometheus-address``)."""

    name: ObjectName = Field(description="Name of the Secret in the Rollout's namespace.")
    token_key: str = Field("token", max_length=253, description="Key of the bearer token.")
    ca_key: str = Field("ca.crt", max_length=253, description="Key of the CA bundle.")


class Prometheus(SpecModel):
    model_config = _validations(TIMEOUT_BOUNDS.cel("timeout"), ADDRESS_RULE.cel())

    address: Address | None = Field(
        None,
        description="Base URL (http or https, no user info, query or fragment); it must be one "
        "the operator allows. Default: the operator's configured one.",
    )
    secret_ref: SecretRef | None = None
    timeout: TimeoutDuration = Field(
        "5s", description="Timeout of a Prometheus query: 100ms to 30s."
    )


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


# The MetricProvider's printer columns.
COLUMNS: Final = (
    {"name": "Address", "type": "string", "jsonPath": ".spec.prometheus.address"},
    {"name": "Timeout", "type": "string", "jsonPath": ".spec.prometheus.timeout"},
    {
        "name": "Secret",
        "type": "string",
        "jsonPath": ".spec.prometheus.secretRef.name",
        "priority": 1,
    },
)
