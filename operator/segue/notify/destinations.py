"""Which webhook destinations Segue refuses to send to.

A webhook URL comes from a Secret that whoever may create a Rollout chooses, and the
operator sends from inside the cluster. Left alone it would reach what only the cluster can
reach: its own pod (loopback), the node's cloud metadata service (link-local,
169.254.169.254, which hands out the node's credentials), and the cluster's Services and
private networks. So a destination is refused when its name or any address it is reached
at is:

- *internal*: loopback, private (RFC 1918, IPv6 unique-local ``fc00::/7``), shared address
  space (``100.64.0.0/10``, used for pod networks too) or a cluster-internal name (a single
  label, ``*.svc``, ``*.cluster.local``, ``*.local``, ``*.internal``, ``*.localhost``);
  allowed when the operator runs with :data:`ALLOW_INTERNAL_FLAG`;
- *never a webhook*: link-local (IPv4 ``169.254.0.0/16`` with the metadata service, IPv6
  ``fe80::/10``), unspecified, multicast, broadcast and other reserved addresses; allowed
  only for a host named in :data:`ALLOW_HOST_FLAG`.

A host named in :data:`ALLOW_HOST_FLAG` is allowed whatever it resolves to. IPv6 addresses
that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``, NAT64
``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by that IPv4 address.

Names are checked before resolution (a clear message early); addresses after it, by the
resolver the HTTP session connects through (:class:`segue.notify.webhook.PoolResolver`), so
a name that resolves to a public address when checked and to an internal one when used
(DNS rebinding) is still refused. Pure: no I/O here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

ALLOW_INTERNAL_FLAG: Final = "--allow-internal-webhooks"
ALLOW_HOST_FLAG: Final = "--allow-webhook-host"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Category = Literal[
    "loopback",
    "private",
    "shared",
    "internal name",
    "link-local",
    "unspecified",
    "multicast",
    "reserved",
    "non-canonical address",
]
# What --allow-internal-webhooks allows; the rest only a named host.
INTERNAL: Final[frozenset[Category]] = frozenset({"loopback", "private", "shared", "internal name"})

_WHAT: Final[dict[Category, str]] = {
    "loopback": "a loopback address",
    "private": "a private address",
    "shared": "a shared (carrier-grade NAT) address, used for pod networks too",
    "internal name": "a cluster-internal or private name",
    "link-local": "a link-local address, where cloud metadata services live",
    "unspecified": "the unspecified address",
    "multicast": "a multicast address",
    "reserved": "a reserved address",
    "non-canonical address": "a number but no canonical IP address",
}

_PRIVATE_V4: Final = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_SHARED_V4: Final = ipaddress.IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL_V6: Final = ipaddress.IPv6Network("fc00::/7")
_SITE_LOCAL_V6: Final = ipaddress.IPv6Network("fec0::/10")  # deprecated, still private
_COMPATIBLE_V6: Final = ipaddress.IPv6Network("::/96")
_NAT64_V6: Final = ipaddress.IPv6Network("64:ff9b::/96")

# Suffixes of names that only resolve inside a cluster or a private network.
_INTERNAL_SUFFIXES: Final = (".svc", ".cluster.local", ".local", ".internal", ".localhost")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and leads to, if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _COMPATIBLE_V6 and int(ip) > 1:  # not :: or ::1
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64_V6:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def classify_address(ip: IPAddress) -> Category | None:
    """Why ``ip`` is not a webhook's address; None when it is a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        carried = embedded_ipv4(ip)
        if carried is not None:
            return classify_address(carried)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address):
        if any(ip in n for n in _PRIVATE_V4):
            return "private"
        if ip in _SHARED_V4:
            return "shared"
    elif ip in _UNIQUE_LOCAL_V6 or ip in _SITE_LOCAL_V6:
        return "private"
    if not ip.is_global:
        return "reserved"
    return None


def classify_name(host: str) -> Category | None:
    """Why the name ``host`` is not a webhook's host; None when it may be resolved."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return "loopback"
    if "." not in name:
        # Resolved through the pod's search domains: a Service of the cluster.
        return "internal name"
    if name in ("svc", "cluster.local") or name.endswith(_INTERNAL_SUFFIXES):
        return "internal name"
    return None


def parse_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is written as one (``[...]`` for IPv6 removed)."""
    try:
        return ipaddress.ip_address(host.strip("[]").replace("%25", "%"))
    except ValueError:
        return None


def _looks_numeric(host: str) -> bool:
    # As aiohttp decides whether to resolve a host: digits and dots, or a colon.
    return ":" in host or host.replace(".", "").isdigit()


@dataclass(frozen=True)
class Refusal:
    """Why a destination is refused, and what would allow it."""

    host: str
    category: Category
    address: str | None = None  # the resolved address judged, for a name

    @property
    def internal(self) -> bool:
        return self.category in INTERNAL

    @property
    def reason(self) -> str:
        if self.address is not None:
            return f"{self.host} resolves to {self.address}, {_WHAT[self.category]}"
        return f"{self.host} is {_WHAT[self.category]}"

    @property
    def fix(self) -> str:
        if self.category == "non-canonical address":
            return "write the address in its canonical form (e.g. 192.0.2.10 or [2001:db8::1])"
        if self.internal:
            return (
                f"allowed only when the operator runs with {ALLOW_INTERNAL_FLAG} "
                f"or {ALLOW_HOST_FLAG}={self.host}"
            )
        return f"allowed only when the operator runs with {ALLOW_HOST_FLAG}={self.host}"

    def __str__(self) -> str:
        return f"{self.reason}; {self.fix}"


class RefusedDestination(OSError):
    """Raised where a connection would go to a refused destination (by the resolver, so
    the HTTP client sees a failed lookup and never connects)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


@dataclass(frozen=True)
class Destinations:
    """The operator's rules for webhook destinations. ``allow_internal``: allow internal
    destinations (above); ``allow_hosts``: hosts allowed whatever they are or resolve to,
    each a name or IP address, or ``*.example.org`` for every name under it."""

    allow_internal: bool = False
    allow_hosts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, allow_internal: bool = False, allow_hosts: Iterable[str] = ()) -> Destinations:
        return cls(allow_internal, frozenset(_normal(h) for h in allow_hosts if h.strip()))

    def named(self, host: str) -> bool:
        """Whether ``host`` is one of ``allow_hosts``."""
        name = _normal(host)
        if name in self.allow_hosts:
            return True
        return any(
            p.startswith("*.") and name.endswith(p[1:]) and len(name) > len(p) - 1
            for p in self.allow_hosts
        )

    def _allows(self, category: Category | None) -> bool:
        return category is None or (self.allow_internal and category in INTERNAL)

    def check_host(self, host: str) -> Refusal | None:
        """The host of a URL, before any lookup: an address written as one is judged
        as it is; a name by its form. A numeric host that is no canonical address
        (``127.1``, ``2130706433``) is refused: it would reach some address nobody wrote."""
        if self.named(host):
            return None
        address = parse_address(host)
        if address is not None:
            category = classify_address(address)
        elif _looks_numeric(host):
            category = "non-canonical address"
        else:
            category = classify_name(host)
        return None if self._allows(category) else Refusal(host, category or "reserved")

    def check_address(self, host: str, address: str) -> Refusal | None:
        """An address ``host`` resolved to, just before connecting."""
        if self.named(host):
            return None
        ip = parse_address(address)
        category: Category | None = "reserved" if ip is None else classify_address(ip)
        if self._allows(category):
            return None
        return Refusal(host, category or "reserved", address)


def _normal(host: str) -> str:
    """A name lowercased without its final dot; an address in its canonical form, so
    ``::FFFF:127.0.0.1`` and ``::ffff:7f00:1`` are one host."""
    name = host.strip().strip("[]").rstrip(".").lower()
    address = parse_address(name)
    return name if address is None else str(address)
