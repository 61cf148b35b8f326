"""What every router's settings share, and the segment a step can send to the new version.

Each router owns its settings model (``segue/traffic/<router>/plugin.py``); ``spec.traffic``
is assembled from the router catalog. The parts here are what the engine and the spec need
to know of any router, whichever it is.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import Field, StringConstraints, field_validator

from segue.api.base import SpecModel

MAX_SEGMENT_VALUES: Final = 32
# An HTTP header name (RFC 9110 token), or a flag evaluation-context key; lower case, as
# HTTP/2 and every proxy Segue drives compare header names.
HEADER_PATTERN: Final = r"^[a-z0-9][a-z0-9!#$%&'*+.^_`|~-]*$"
# A customer id or other header value: printable ASCII without spaces, commas, quotes or
# backslashes, so it can be written unescaped into a regular expression alternative, an
# NGINX annotation and a JSON Logic rule alike once its regex metacharacters are escaped.
SEGMENT_VALUE_PATTERN: Final = r"^[A-Za-z0-9._:@/+=-]+$"

HeaderName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=HEADER_PATTERN)]
SegmentValue = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=SEGMENT_VALUE_PATTERN)
]
MSG_UNIQUE_SEGMENT_VALUES: Final = "setSegment.values: values must be unique"


class Segment(SpecModel):
    """Requests whose ``header`` (or flag-context key) has one of ``values`` go to the new
    version, whatever the weight: named customers first, or beside a percentage."""

    header: HeaderName = Field(
        description="Request header (lower case), or the flag evaluation-context key for "
        "the flagd router, e.g. x-customer-id."
    )
    values: list[SegmentValue] = Field(
        min_length=1,
        max_length=MAX_SEGMENT_VALUES,
        description="Values that select the segment, e.g. customer ids; 1 to 32, unique.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @field_validator("values")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError(MSG_UNIQUE_SEGMENT_VALUES)
        return values

    def key(self) -> tuple[str, tuple[str, ...]]:
        """Order-insensitive identity: two segments with the same values are the same."""
        return self.header, tuple(sorted(self.values))


class RouterSettings(SpecModel):
    """The settings of one router under ``spec.traffic``."""

    # Whether the router can send a segment (setSegment steps) to the new version.
    segments: ClassVar[bool] = False
    # When the router takes fewer header names than HEADER_PATTERN: (pattern, the message
    # refusing a setSegment header that does not match it, naming the field and the fix).
    segment_header: ClassVar[tuple[str, str] | None] = None

    def routing_object(self) -> str:
        """The object that carries the split, as a person names it (``HTTPRoute checkout``)."""
        raise NotImplementedError(f"{type(self).__name__} must name its routing object")
