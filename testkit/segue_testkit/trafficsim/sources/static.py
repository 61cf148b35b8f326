"""A fixed split given on the command line (``--static-weight``): no cluster needed."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from segue_testkit.trafficsim.sources.base import (
    ApiClientFactory,
    ArgumentAdder,
    SourceKind,
    Split,
    WeightSource,
)


@dataclass
class StaticWeight:
    weight: float

    def describe(self) -> str:
        return f"static weight {self.weight:g}"

    def read(self) -> Split:
        return Split(self.weight)


def _add_arguments(choose: ArgumentAdder, parser: ArgumentAdder) -> None:
    choose.add_argument("--static-weight", type=float, metavar="PERCENT", help="fixed new weight")


def _check(args: argparse.Namespace) -> str | None:
    if not 0 <= args.static_weight <= 100:
        return f"--static-weight must be between 0 and 100, got {args.static_weight:g}"
    return None


def _build(args: argparse.Namespace, api: ApiClientFactory) -> WeightSource:
    return StaticWeight(args.static_weight)


KIND = SourceKind(
    add_arguments=_add_arguments,
    chosen=lambda args: args.static_weight is not None,
    check=_check,
    build=_build,
)
