"""The CRDs a test cluster needs: Segue's own (crds/ in the checkout, as the chart ships them)
and third-party ones that routers' tests use, each taken from the Go module that publishes it.

A third-party entry is a ``CRDSource``; ``crd_sources()`` gathers them from the routers in
Segue's catalog, so a new router's CRDs come with its folder.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from segue.api.crd import CRD_PATH, MIGRATION_CRD_PATH, PROVIDER_CRD_PATH
from segue.traffic.catalog import ROUTERS
from segue_testkit.cluster.gomod import go_module_dir

MAX_PATHS_PER_SOURCE = 64


@dataclass(frozen=True)
class CRDSource:
    """CRD files published in a Go module: ``paths`` are relative to the module's root."""

    module: str
    version: str
    paths: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.module or " " in self.module:
            raise ValueError(f"CRDSource.module must be a Go module path, got {self.module!r}")
        if not self.version.startswith("v"):
            raise ValueError(
                f"CRDSource.version of {self.module} must be a module version like v1.2.3, "
                f"got {self.version!r}"
            )
        if not 1 <= len(self.paths) <= MAX_PATHS_PER_SOURCE:
            raise ValueError(
                f"CRDSource.paths of {self.module} must list 1 to {MAX_PATHS_PER_SOURCE} files, "
                f"got {len(self.paths)}"
            )
        for path in self.paths:
            pure = PurePosixPath(path)
            if pure.is_absolute() or ".." in pure.parts or not path.endswith((".yaml", ".yml")):
                raise ValueError(
                    f"CRDSource.paths of {self.module}: {path!r} must be a .yaml file relative "
                    "to the module root, without '..'"
                )


def crd_sources() -> tuple[CRDSource, ...]:
    """Every third-party CRD the tests install: what each router in Segue's catalog
    declares (``test_crds`` in ``segue/traffic/<router>/plugin.py``), once each."""
    seen: dict[tuple[str, str, tuple[str, ...]], CRDSource] = {}
    for router in ROUTERS:
        for s in router.test_crds:
            seen.setdefault((s.module, s.version, s.paths), CRDSource(s.module, s.version, s.paths))
    return tuple(seen.values())


def source_files(source: CRDSource) -> list[Path]:
    """The files of one source, downloaded through the Go module proxy."""
    root = go_module_dir(source.module, source.version)
    files = [root / path for path in source.paths]
    missing = [str(f.relative_to(root)) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source.module}@{source.version} has no {', '.join(missing)}; fix the paths of "
            "its CRDSource"
        )
    return files


def segue_crd_files() -> list[Path]:
    """Segue's own CRDs, as generated into crds/ (`make crds`)."""
    return [CRD_PATH, PROVIDER_CRD_PATH, MIGRATION_CRD_PATH]


def crd_files(sources: Iterable[CRDSource] | None = None) -> list[Path]:
    """Segue's CRDs and those of ``sources`` (default: ``crd_sources()``)."""
    chosen = crd_sources() if sources is None else tuple(sources)
    return [*segue_crd_files(), *(f for s in chosen for f in source_files(s))]


def crd_names(files: Sequence[Path]) -> list[str]:
    """The names (``<plural>.<group>``) of the CustomResourceDefinitions in ``files``."""
    names = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                names.append(str(doc["metadata"]["name"]))
    return names


def install_crds(
    bins: Path, kubeconfig: str | Path, sources: Iterable[CRDSource] | None = None
) -> list[str]:
    """Apply Segue's CRDs and those of ``sources`` (default: ``crd_sources()``) with the
    kubectl in ``bins``, and wait until the API server serves them all. Returns their names."""
    files = crd_files(sources)

    def kubectl(*args: str) -> None:
        argv = [str(bins / "kubectl"), f"--kubeconfig={kubeconfig}", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")

    for path in files:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    names = crd_names(files)
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))
    return names
