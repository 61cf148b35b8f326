"""Shared pydantic configuration and field types of the Rollout API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    JsonValue,
    PlainSerializer,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

# DNS-1123 subdomain: what Kubernetes accepts as the name of most objects.
NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# DNS-1123 label: short names that end up in label values and metric labels.
LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A Kubernetes label value (the version label of the pods).
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=NAME_PATTERN)]
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_PATTERN)]
LabelValue = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)
]


class SpecModel(BaseModel):
    """A part of the spec: camelCase on the wire; unknown fields are errors, so a typo in a
    manifest is reported instead of silently ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True
    )


class StatusModel(BaseModel):
    """A part of the status: camelCase on the wire; unknown fields are ignored, because the
    status also holds kopf's bookkeeping and fields of other operator versions."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def _to_utc(value: datetime) -> datetime:
    # A naive time can only have come from our own UTC clock.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, as Kubernetes writes times."""
    return _to_utc(value).isoformat().replace("+00:00", "Z")


Timestamp = Annotated[
    datetime,
    AfterValidator(_to_utc),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]


def cel_rules(*rules: tuple[str, str] | dict[str, str]) -> ConfigDict:
    """CEL rules for the API server (``x-kubernetes-validations``), each with a message naming
    the field and the fix. A rule is ``(rule, message)``, or a dict with more keys
    (``fieldPath``, ...)."""
    cel: list[JsonValue] = [
        dict(r) if isinstance(r, dict) else {"rule": r[0], "message": r[1]} for r in rules
    ]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": cel})


def exactly_one(*fields: str) -> str:
    """A CEL expression: exactly one of ``fields`` is set."""
    return " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields) + " == 1"
