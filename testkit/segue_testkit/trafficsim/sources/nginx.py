"""The split of an ingress-nginx canary Ingress (``--canary-ingress``): its canary
annotations, applied to each simulated request the way ingress-nginx's balancer applies them.

A request goes to the canary when the ``canary-by-header`` header matches: equal to
``canary-by-header-value`` if set, else found by the PCRE ``canary-by-header-pattern`` if
set, else equal to ``always``. Otherwise it goes there with probability ``canary-weight`` /
``canary-weight-total`` (default 100). Simulated requests carry their customer id in one
header (``--customer-header``, default x-customer-id) and no cookie, so cookie rules never
apply. An Ingress without ``canary: "true"`` is no canary at all: everything stays on the
primary.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from segue_testkit.trafficsim.sources.base import (
    ApiClientFactory,
    ArgumentAdder,
    SourceKind,
    Split,
    WeightSource,
    parse_ref,
)

DEFAULT_PREFIX = "nginx.ingress.kubernetes.io"
DEFAULT_HEADER = "x-customer-id"
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # strconv.ParseBool
_GO_INT = re.compile(r"[+-]?[0-9]{1,18}")  # strconv.Atoi, within int64


def _atoi(value: str | None, default: int) -> int:
    return int(value) if value is not None and _GO_INT.fullmatch(value) else default


def _nginx_var(header: str) -> str:
    """The nginx variable a header is read from: $http_<lower case, '-' as '_'>."""
    return header.lower().replace("-", "_")


def split_from_canary(
    annotations: Mapping[str, str],
    customers: Iterable[str],
    customer_header: str = DEFAULT_HEADER,
    prefix: str = DEFAULT_PREFIX,
) -> Split:
    def get(name: str) -> str:
        return annotations.get(f"{prefix}/{name}") or ""

    if get("canary") not in _GO_TRUE:
        return Split(0.0)
    total = _atoi(get("canary-weight-total") or None, 100)
    weight = _atoi(get("canary-weight") or None, 0)
    share = 0.0 if total <= 0 else 100.0 * min(max(weight, 0), total) / total
    header = get("canary-by-header")
    if not header or _nginx_var(header) != _nginx_var(customer_header):
        return Split(share)
    value, pattern = get("canary-by-header-value"), get("canary-by-header-pattern")
    if value:
        segment = {c for c in customers if c == value}
    elif pattern:
        segment = {c for c in customers if re.search(pattern, c)}
    else:
        segment = {c for c in customers if c == "always"}
    return Split(share, frozenset(segment))


class CanaryIngressSplit:
    def __init__(
        self,
        api_client: Any,
        ref: str,
        customers: Iterable[str],
        customer_header: str,
        prefix: str,
    ) -> None:
        from kubernetes import client

        self.namespace, self.name = parse_ref(ref, "--canary-ingress")
        self.customers = tuple(customers)
        self.customer_header, self.prefix = customer_header, prefix
        self.api = client.NetworkingV1Api(api_client)

    def describe(self) -> str:
        return f"canary Ingress {self.namespace}/{self.name}"

    def read(self) -> Split:
        # Raw JSON: only the annotations matter (see replicas.py on the client's models).
        resp: Any = self.api.read_namespaced_ingress(
            self.name, self.namespace, _preload_content=False, _request_timeout=2
        )
        annotations = (json.loads(resp.data).get("metadata") or {}).get("annotations") or {}
        return split_from_canary(annotations, self.customers, self.customer_header, self.prefix)


def _add_arguments(choose: ArgumentAdder, parser: ArgumentAdder) -> None:
    choose.add_argument(
        "--canary-ingress", metavar="NS/NAME", help="split by this ingress-nginx canary Ingress"
    )
    parser.add_argument(
        "--annotation-prefix", default=DEFAULT_PREFIX, help="ingress-nginx annotation prefix"
    )


def _build(args: argparse.Namespace, api: ApiClientFactory) -> WeightSource:
    return CanaryIngressSplit(
        api(), args.canary_ingress, args.customers, args.customer_header, args.annotation_prefix
    )


KIND = SourceKind(
    add_arguments=_add_arguments,
    chosen=lambda args: bool(args.canary_ingress),
    check=lambda args: None,
    build=_build,
)
