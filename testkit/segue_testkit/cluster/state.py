"""The running cluster's state file (SEGUE_CLUSTER_DIR/state.json): its processes and what
clients need to reach it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segue_testkit.cluster.processes import Proc, spawn
from segue_testkit.cluster.settings import state_dir


def state_file() -> Path:
    return state_dir() / "state.json"


def save_state(procs: list[Proc], extra: dict[str, Any] | None) -> None:
    state_dir().mkdir(parents=True, exist_ok=True)
    old = load_state()
    data = {"procs": [p.__dict__ for p in procs], **(old.get("info", {}) and {"info": old["info"]})}
    if extra is not None:
        data["info"] = extra
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(state_file())


def load_state() -> dict[str, Any]:
    try:
        return json.loads(state_file().read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def running_procs() -> list[Proc]:
    return [Proc(**p) for p in load_state().get("procs", [])]


def start(name: str, argv: list[str], logs: Path, procs: list[Proc]) -> None:
    """Start a component and record it at once, so `down` finds it even if `up` fails."""
    procs.append(spawn(name, argv, logs))
    save_state(procs, extra=None)
