"""Waiting for the cluster's components to answer."""

from __future__ import annotations

import contextlib
import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, logs: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.25)
    hint = f" (logs in {logs})" if logs else ""
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}{hint}")


def https_ok(url: str, pki: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
        return bool(r.status == 200)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)
