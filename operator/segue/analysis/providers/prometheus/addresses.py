"""Which inline Prometheus addresses a Rollout may name.

A Rollout's ``spec.analysis.prometheus.address`` is written by whoever may edit Rollouts,
so it is honoured only when the operator was started allowing it
(``--allow-prometheus-address``); the operator-wide default address is always allowed.
Anything else should be a MetricProvider, which only the platform team can declare.

Addresses are compared normalised: scheme and host in lower case, the scheme's default
port dropped, no trailing slash. No prefix or pattern matching: an allowed address is
exactly one server and one path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def normalise(address: str) -> str | None:
    """``address`` in a canonical form, or None when it is not a plain http(s) base URL
    (user info, query string, fragment, another scheme, no host, a bad port)."""
    try:
        parts = urlsplit(address.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if "@" in parts.netloc or parts.query or parts.fragment or "?" in address or "#" in address:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class AddressPolicy:
    """The inline addresses this operator sends queries (and tokens) to."""

    allowed: frozenset[str]

    @classmethod
    def of(cls, addresses: Iterable[str]) -> AddressPolicy:
        normalised = (normalise(a) for a in addresses if a and a.strip())
        return cls(frozenset(a for a in normalised if a is not None))

    def allows(self, address: str) -> bool:
        canonical = normalise(address)
        return canonical is not None and canonical in self.allowed

    def refusal(self, address: str) -> str:
        """Why ``address`` is refused, naming the field and the fixes."""
        return (
            f"spec.analysis.prometheus.address: {address[:200]} is not an address this operator "
            "may query; name a MetricProvider in spec.analysis.providerRef instead, or ask "
            "the platform team to allow the address (--allow-prometheus-address)"
        )
