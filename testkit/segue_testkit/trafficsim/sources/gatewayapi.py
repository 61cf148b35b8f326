"""The split of a Gateway API HTTPRoute rule (``--httproute``): the backendRefs' weights."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, cast

from segue_testkit.trafficsim.sources.base import (
    ApiClientFactory,
    ArgumentAdder,
    SourceKind,
    Split,
    WeightSource,
    parse_ref,
)


def weight_from_httproute(
    route: Mapping[str, Any], legacy_backend: str, new_backend: str, rule_index: int = 0
) -> float | None:
    """Percentage of traffic the new backend gets from an HTTPRoute rule's backendRefs.

    A backendRef without ``weight`` weighs 1 (Gateway API default); a backend not listed
    gets nothing. None when neither backend gets anything (no traffic is sent).
    """
    rules = route.get("spec", {}).get("rules") or []
    if rule_index >= len(rules):
        raise ValueError(f"HTTPRoute has {len(rules)} rules, no rule {rule_index}")
    weights = {legacy_backend: 0, new_backend: 0}
    for ref in rules[rule_index].get("backendRefs") or []:
        name = ref.get("name")
        if name in weights:
            weights[name] += int(ref.get("weight", 1))
    total = weights[legacy_backend] + weights[new_backend]
    if total <= 0:
        return None
    return 100.0 * weights[new_backend] / total


def segment_from_httproute(
    route: Mapping[str, Any], new_backend: str, rule_index: int, header: str
) -> frozenset[str]:
    """Customer ids whose requests a rule other than ``rule_index`` sends to the new backend
    alone, by an Exact match on ``header``: Gateway API prefers the match with more header
    matches, so those requests skip the weighted rule."""
    out: set[str] = set()
    for i, rule in enumerate(route.get("spec", {}).get("rules") or []):
        refs = rule.get("backendRefs") or []
        if i == rule_index or not refs or any(r.get("name") != new_backend for r in refs):
            continue
        for match in rule.get("matches") or []:
            for h in match.get("headers") or []:
                exact = h.get("type", "Exact") == "Exact"
                if exact and str(h.get("name", "")).lower() == header.lower():
                    out.add(str(h.get("value", "")))
    return frozenset(out)


class HTTPRouteWeight:
    def __init__(
        self,
        api_client: Any,
        ref: str,
        legacy_backend: str,
        new_backend: str,
        rule_index: int,
        customer_header: str = "x-customer-id",
    ) -> None:
        from kubernetes import client

        self.namespace, self.name = parse_ref(ref, "--httproute")
        self.legacy_backend, self.new_backend, self.rule_index = (
            legacy_backend,
            new_backend,
            rule_index,
        )
        self.customer_header = customer_header
        self.api = client.CustomObjectsApi(api_client)

    def describe(self) -> str:
        return f"HTTPRoute {self.namespace}/{self.name} rule {self.rule_index}"

    def read(self) -> Split:
        route = self.api.get_namespaced_custom_object(
            "gateway.networking.k8s.io",
            "v1",
            self.namespace,
            "httproutes",
            self.name,
            _request_timeout=2,
        )
        body = cast(Mapping[str, Any], route)
        return Split(
            weight_from_httproute(body, self.legacy_backend, self.new_backend, self.rule_index),
            segment_from_httproute(body, self.new_backend, self.rule_index, self.customer_header),
        )


def _add_arguments(choose: ArgumentAdder, parser: ArgumentAdder) -> None:
    choose.add_argument("--httproute", metavar="NS/NAME", help="read weights from this HTTPRoute")
    parser.add_argument("--legacy-backend", help="backendRef name of legacy in the HTTPRoute")
    parser.add_argument("--new-backend", help="backendRef name of new in the HTTPRoute")
    parser.add_argument("--rule-index", type=int, default=0, help="HTTPRoute rule to read")


def _check(args: argparse.Namespace) -> str | None:
    if not (args.legacy_backend and args.new_backend):
        return "--httproute needs --legacy-backend and --new-backend"
    if args.rule_index < 0:
        return f"--rule-index must be 0 or more, got {args.rule_index}"
    return None


def _build(args: argparse.Namespace, api: ApiClientFactory) -> WeightSource:
    return HTTPRouteWeight(
        api(),
        args.httproute,
        args.legacy_backend,
        args.new_backend,
        args.rule_index,
        args.customer_header,
    )


KIND = SourceKind(
    add_arguments=_add_arguments,
    chosen=lambda args: bool(args.httproute),
    check=_check,
    build=_build,
)
