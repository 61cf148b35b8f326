"""The split of an OpenFeature flagd flag kept in a ConfigMap (``--flagd``), as flagd's own
evaluator (openfeature-flagd-core, what flagd's in-process providers run) resolves it.

The flag is evaluated for ``SAMPLE_REQUESTS`` targeting keys, one per simulated request:
the share that resolves to the new variant is the weight. Each ``--customers`` id is then
evaluated with the id under ``--customer-header`` in the evaluation context, on requests
that resolve to legacy without it: a customer whose every such request resolves to the new
variant is in the segment. A document is evaluated once, when it changes.
Nothing of Segue's own code is used: this reads the flag as an application would.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from segue_testkit.trafficsim.sources.base import (
    ApiClientFactory,
    ArgumentAdder,
    SourceKind,
    Split,
    WeightSource,
    parse_ref,
)

SAMPLE_REQUESTS = 10_000
# Requests resolving to legacy without a customer id that must all resolve to the new variant
# with a customer's id for the customer to be in the segment.
SEGMENT_SAMPLE = 200


def request_keys(count: int) -> list[str]:
    """The targeting keys of ``count`` simulated requests (the same on every read)."""
    return [f"request-{i}" for i in range(count)]


class FlagEvaluator:
    """One flagd document, loaded into flagd's evaluator, asked for one flag's variant."""

    def __init__(self, document: str, flag: str) -> None:
        from openfeature.contrib.tools.flagd.core import FlagdCore

        self.core = FlagdCore()
        self.core.set_flags(document)
        self.flag = flag
        definition = (json.loads(document).get("flags") or {}).get(flag)
        if not isinstance(definition, dict):
            raise ValueError(f"the document has no flag {flag}")
        values = list((definition.get("variants") or {}).values())
        self._resolve = self._resolver(values[0] if values else "")

    def _resolver(self, sample: object) -> Any:
        # The evaluator checks the variant's value type against the resolver's.
        if isinstance(sample, bool):
            return self.core.resolve_boolean_value
        if isinstance(sample, int):
            return self.core.resolve_integer_value
        if isinstance(sample, float):
            return self.core.resolve_float_value
        if isinstance(sample, dict | list):
            return self.core.resolve_object_value
        return self.core.resolve_string_value

    def variant(self, targeting_key: str, context: dict[str, str] | None = None) -> str | None:
        from openfeature.evaluation_context import EvaluationContext

        ctx = EvaluationContext(targeting_key=targeting_key, attributes=dict(context or {}))
        details = self._resolve(self.flag, None, ctx)
        return None if details.variant is None else str(details.variant)


def split_of(
    document: str,
    flag: str,
    legacy_variant: str,
    new_variant: str,
    customers: Sequence[str],
    context_key: str,
) -> Split:
    """The split flagd makes of ``flag``: the share of simulated requests resolving to the
    new variant, and the customers whose requests resolve to it even where a request
    without a customer id resolves to legacy."""
    evaluator = FlagEvaluator(document, flag)
    keys = request_keys(SAMPLE_REQUESTS)
    variants = [evaluator.variant(k) for k in keys]
    unknown = set(variants) - {legacy_variant, new_variant}
    if unknown:
        raise ValueError(
            f"flag {flag} resolves to {sorted(map(str, unknown))}, neither {legacy_variant} "
            f"nor {new_variant}"
        )
    weight = 100.0 * variants.count(new_variant) / len(keys)
    witnesses = [k for k, v in zip(keys, variants, strict=True) if v == legacy_variant]
    witnesses = witnesses[:SEGMENT_SAMPLE]
    if not witnesses:
        return Split(weight)  # everything goes to the new version: no segment to tell apart
    segment = frozenset(
        c
        for c in customers
        if all(evaluator.variant(k, {context_key: c}) == new_variant for k in witnesses)
    )
    return Split(weight, segment)


class FlagdWeight:
    def __init__(self, api_client: Any, args: argparse.Namespace) -> None:
        from kubernetes import client

        self.namespace, self.name = parse_ref(args.flagd, "--flagd")
        self.key: str = args.flagd_key
        self.flag: str = args.flag
        self.legacy_variant: str = args.legacy_variant
        self.new_variant: str = args.new_variant
        self.context_key: str = args.customer_header
        self.customers: tuple[str, ...] = tuple(args.customers)
        self.api = client.CoreV1Api(api_client)
        self._last: tuple[str, Split] | None = None

    def describe(self) -> str:
        return f"flagd flag {self.flag} in ConfigMap {self.namespace}/{self.name} key {self.key}"

    def read(self) -> Split:
        resp: Any = self.api.read_namespaced_config_map(
            self.name, self.namespace, _preload_content=False, _request_timeout=2
        )
        data = json.loads(resp.data).get("data") or {}
        document = data.get(self.key)
        if not isinstance(document, str):
            raise ValueError(f"ConfigMap {self.namespace}/{self.name} has no key {self.key}")
        if self._last is not None and self._last[0] == document:
            return self._last[1]  # evaluated already: only a changed document is evaluated
        split = split_of(
            document,
            self.flag,
            self.legacy_variant,
            self.new_variant,
            self.customers,
            self.context_key,
        )
        self._last = (document, split)
        return split


def _add_arguments(choose: ArgumentAdder, parser: ArgumentAdder) -> None:
    choose.add_argument(
        "--flagd", metavar="NS/CONFIGMAP", help="evaluate a flagd flag kept in this ConfigMap"
    )
    parser.add_argument(
        "--flagd-key", default="flags.flagd.json", help="ConfigMap key holding the flag document"
    )
    parser.add_argument("--flag", help="the flag's key")
    parser.add_argument("--legacy-variant", help="the flag's variant of the legacy version")
    parser.add_argument("--new-variant", help="the flag's variant of the new version")


def _check(args: argparse.Namespace) -> str | None:
    if not (args.flag and args.legacy_variant and args.new_variant):
        return "--flagd needs --flag, --legacy-variant and --new-variant"
    if args.legacy_variant == args.new_variant:
        return "--legacy-variant and --new-variant must differ"
    return None


def _build(args: argparse.Namespace, api: ApiClientFactory) -> WeightSource:
    return FlagdWeight(api(), args)


KIND = SourceKind(
    add_arguments=_add_arguments,
    chosen=lambda args: bool(args.flagd),
    check=_check,
    build=_build,
)
