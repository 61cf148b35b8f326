"""Prometheus credentials from a Secret: a bearer token, and a CA bundle written to a file
once per content (the HTTP client wants a path).

A Rollout's own Secret is read in its namespace; a MetricProvider's in the namespace the
MetricProvider names, never the Rollout's.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from segue.analysis.providers.runtime import SecretReader

_written: set[str] = set()


def ca_file(pem: str) -> str:
    """The path of a file holding ``pem``, written once per content."""
    digest = hashlib.sha256(pem.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"segue-ca-{digest}.pem"
    if str(path) not in _written:
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(pem)
            tmp.replace(path)
        _written.add(str(path))
    return str(path)


async def read_credentials(
    secrets: SecretReader, namespace: str, name: str, token_key: str, ca_key: str
) -> tuple[str | None, str | None]:
    """The bearer token (None when absent or empty) and the CA bundle's file (None when
    the Secret has none)."""
    data = await secrets.read(namespace, name)
    pem = data.get(ca_key)
    return data.get(token_key) or None, ca_file(pem) if pem else None
