"""The Go toolchain: its version, and Go modules fetched through the module proxy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def go_version() -> str:
    return subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True
    ).stdout.strip()


def go_module_dir(module: str, version: str) -> Path:
    """Download a Go module through the module proxy and return its folder."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout
    return Path(json.loads(out)["Dir"])
