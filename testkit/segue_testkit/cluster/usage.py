"""What a person needs to use the running cluster from a shell."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

from segue_testkit.cluster.state import load_state

NOT_RUNNING = "no cluster is running; start one with: python -m segue_testkit.cluster up"


def print_usage(info: dict[str, Any]) -> None:
    print(
        textwrap.dedent(f"""
        Local cluster ready.
          export KUBECONFIG={info["kubeconfig"]}
          export PATH={info["bin_dir"]}:$PATH      # kubectl and helm matching the server
          kubectl get nodes
        Prometheus: {info.get("prometheus", "not started")}
        Logs: {info["logs"]}
        Stop it with: python -m segue_testkit.cluster down
        """),
        flush=True,
    )


def env_lines() -> Iterator[str]:
    info = load_state().get("info", {})
    if not info:
        raise SystemExit(NOT_RUNNING)
    yield f"export KUBECONFIG={info['kubeconfig']}"
    yield f"export PATH={info['bin_dir']}:$PATH"
    if "prometheus" in info:
        yield f"export SEGUE_PROMETHEUS_ADDRESS={info['prometheus']}"
