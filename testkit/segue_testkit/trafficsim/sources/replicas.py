"""The split by ready pods of a legacy and a new Deployment (``--deployments``), as traffic
goes through one Service selecting both, without a mesh."""

from __future__ import annotations

import argparse
import json
from typing import Any

from segue_testkit.trafficsim.sources.base import (
    ApiClientFactory,
    ArgumentAdder,
    SourceKind,
    Split,
    WeightSource,
    parse_ref,
)


def weight_from_ready(legacy_ready: int, new_ready: int) -> float | None:
    """Percentage for the new version when traffic follows ready pods (no mesh)."""
    total = legacy_ready + new_ready
    if total <= 0:
        return None
    return 100.0 * new_ready / total


class DeploymentsWeight:
    def __init__(self, api_client: Any, refs: str) -> None:
        from kubernetes import client

        parts = refs.split(",")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError("--deployments must be NS/LEGACY,NS/NEW")
        self.legacy = parse_ref(parts[0], "--deployments")
        self.new = parse_ref(parts[1], "--deployments")
        self.api = client.AppsV1Api(api_client)

    def describe(self) -> str:
        return f"ready replicas of {'/'.join(self.legacy)} and {'/'.join(self.new)}"

    def _ready(self, ref: tuple[str, str]) -> int:
        # Raw JSON rather than the client's model: only one field matters, and the model's
        # strict validation would trip on any skew between client and server versions.
        resp: Any = self.api.read_namespaced_deployment(
            ref[1], ref[0], _preload_content=False, _request_timeout=2
        )
        status = json.loads(resp.data).get("status") or {}
        return int(status.get("readyReplicas") or 0)

    def read(self) -> Split:
        return Split(weight_from_ready(self._ready(self.legacy), self._ready(self.new)))


def _add_arguments(choose: ArgumentAdder, parser: ArgumentAdder) -> None:
    choose.add_argument(
        "--deployments", metavar="NS/LEGACY,NS/NEW", help="split by ready replicas of these"
    )


def _build(args: argparse.Namespace, api: ApiClientFactory) -> WeightSource:
    return DeploymentsWeight(api(), args.deployments)


KIND = SourceKind(
    add_arguments=_add_arguments,
    chosen=lambda args: bool(args.deployments),
    check=lambda args: None,
    build=_build,
)
