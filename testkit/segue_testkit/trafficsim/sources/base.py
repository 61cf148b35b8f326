"""What every weight source provides, and the pieces the cluster-reading ones share.

A source is one module in this package that defines ``KIND``: the command-line flag that
selects it, and how to build it from the parsed arguments. Its ``read()`` returns a ``Split``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast


@dataclass(frozen=True)
class Split:
    """How traffic is split between the legacy and the new version.

    ``weight``: the new version's share in percent (0..100), or None when nothing is routed
    by weight. ``segment``: customer ids whose requests go to the new version whatever the
    weight (a router that pins some customers to the new version says so here).
    """

    weight: float | None
    segment: frozenset[str] = frozenset()


class WeightSource(Protocol):
    def describe(self) -> str: ...

    def read(self) -> Split:
        """The split as the cluster routes it now; raises when it cannot be read."""
        ...


class ArgumentAdder(Protocol):
    """An argparse parser or group: what a source's flags are added to."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action: ...


ApiClientFactory = Callable[[], Any]


@dataclass(frozen=True)
class SourceKind:
    """One way of reading the split, chosen by its own command-line flag."""

    # Adds the choosing flag to the first (mutually exclusive) group, any others to the parser.
    add_arguments: Callable[[ArgumentAdder, ArgumentAdder], None]
    chosen: Callable[[argparse.Namespace], bool]
    # A message naming what is missing or wrong in the arguments, or None.
    check: Callable[[argparse.Namespace], str | None]
    build: Callable[[argparse.Namespace, ApiClientFactory], WeightSource]


def parse_ref(ref: str, what: str) -> tuple[str, str]:
    """NAMESPACE/NAME as a pair; ArgumentTypeError naming ``what`` otherwise."""
    ns, sep, name = ref.partition("/")
    if not sep or not ns or not name:
        raise argparse.ArgumentTypeError(f"{what} must be NAMESPACE/NAME, got {ref!r}")
    return ns, name


def api_client(kubeconfig: str | None) -> Any:
    """A Kubernetes client from ``kubeconfig``, $KUBECONFIG, ~/.kube/config or in-cluster."""
    from kubernetes import config

    # The config loaders carry no annotations.
    if kubeconfig or os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        new_client = cast(Callable[..., Any], config.new_client_from_config)
        return new_client(config_file=kubeconfig)
    cast(Callable[[], None], config.load_incluster_config)()
    from kubernetes import client

    return client.ApiClient()
