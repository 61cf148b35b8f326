"""Metric provider addresses: where Segue sends queries, and a bearer token with them.

An address is a base URL and nothing more: scheme ``http`` or ``https``, a host (and port),
an optional path. User info (``user:password@``) would be credentials in a spec; a query
string or fragment would let the writer choose what the request carries. The same pattern
is checked by pydantic (``segue lint``, the operator) and by a CEL rule in the CRD.
"""

from __future__ import annotations

import re
from typing import Final

from segue.api.text import cap

# No whitespace, '@', '?' or '#' anywhere; a non-empty host. RE2 (CEL) and Python agree on it.
ADDRESS_PATTERN: Final = r"^https?://[^/?#@\s]+(/[^?#@\s]*)?$"
MAX_ADDRESS_LENGTH: Final = 2048
_ADDRESS: Final = re.compile(ADDRESS_PATTERN)
_FIX: Final = (
    "must be an http:// or https:// URL without user info, query string or fragment, "
    "e.g. https://prometheus.monitoring:9090"
)


def address_message(path: str) -> str:
    """The message naming the field, shared by pydantic and the CEL rule."""
    return f"{path}: {_FIX}"


def valid_address(text: str) -> bool:
    return _ADDRESS.fullmatch(text) is not None


class AddressRule:
    """One address field: its pydantic check and its CEL rule (on the enclosing object)."""

    def __init__(self, path: str, field: str = "address") -> None:
        self.path = path
        self.field = field
        self.message = address_message(path)

    def check(self, text: str) -> str:
        if not valid_address(text):
            raise ValueError(f"{self.message}; got {cap(text, 64)}")
        return text

    def cel(self) -> dict[str, str]:
        value = f"self.{self.field}"
        return {
            "rule": f"!has({value}) || {value}.matches(r'{ADDRESS_PATTERN}')",
            "message": self.message,
            "fieldPath": f".{self.field}",
        }
