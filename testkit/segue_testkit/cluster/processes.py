"""The cluster's component processes: started in sessions of their own so they outlive the
command that started them, recognised by pid and program, and stopped gently."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Proc:
    name: str
    pid: int
    argv0: str
    argv: list[str] = field(default_factory=list)  # to start it again (`apiserver start`)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(name: str, argv: list[str], logs: Path, mode: str = "wb") -> Proc:
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open(mode) as out:
        # A new session: the components outlive this process and are stopped by pid.
        p = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, p.pid, argv[0], argv)


def alive(proc: Proc) -> bool:
    """True if the pid still runs the program we started (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    zombie = stat.rsplit(")", 1)[1].split()[0] == "Z"
    return cmdline == proc.argv0 and not zombie


def stop_proc(p: Proc, grace: float = 10) -> None:
    if not alive(p):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(p):
        time.sleep(0.1)
    if alive(p):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
