"""Where the simulator reads the split from: one module per source in this package, each
defining ``KIND`` (its command-line flag and how to build it). A new router adds its module
here and nothing else: ``KINDS`` is every module that defines one."""

import importlib
import pkgutil

from segue_testkit.trafficsim.sources.base import SourceKind, Split, WeightSource


def _kinds() -> tuple[SourceKind, ...]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        kind = getattr(module, "KIND", None)
        if isinstance(kind, SourceKind):
            found.append(kind)
    return tuple(found)


KINDS: tuple[SourceKind, ...] = _kinds()

__all__ = ["KINDS", "SourceKind", "Split", "WeightSource"]
