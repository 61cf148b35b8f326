"""The running half of every provider in the catalog, for the operator's shell.

Each catalog entry names the module of its runtime (``Provider.runtime``), which exposes
``RUNTIME``; nothing here lists providers again, so adding one stays one catalog line.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterable

from segue.analysis.providers import catalog
from segue.analysis.providers.runtime import ProviderRuntime


def _load(key: str, module: str) -> ProviderRuntime:
    runtime: ProviderRuntime = importlib.import_module(module).RUNTIME
    if runtime.provider.key != key:
        raise ValueError(f"{module}.RUNTIME is the runtime of {runtime.provider.key}, not {key}")
    return runtime


def runtimes(overrides: Iterable[ProviderRuntime] = ()) -> dict[str, ProviderRuntime]:
    """Every provider's runtime by key, in catalog order: the given ones, else each
    provider's own with its defaults (no operator flags)."""
    given = {r.provider.key: r for r in overrides}
    unknown = set(given) - set(catalog.KEYS)
    if unknown:
        raise ValueError(f"not in the catalog of metric providers: {', '.join(sorted(unknown))}")
    return {p.key: given.get(p.key) or _load(p.key, p.runtime) for p in catalog.PROVIDERS}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Every provider's operator flags."""
    for runtime in runtimes().values():
        runtime.add_flags(parser)


def configured(args: argparse.Namespace) -> list[ProviderRuntime]:
    """Every provider's runtime with the operator's flags applied."""
    return [runtime.configured(args) for runtime in runtimes().values()]
