"""What the store tells a member Rollout about its Migration, and the views it keeps."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from segue.controller.migrations import migration_needs_work
from segue.controller.store import Store
from segue.engine import decide
from tests.unit.conftest import make_spec, observe


def rollout(name: str, phase: str | None = None, **labels: str) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if phase == "RollingBack":
        status["rollback"] = {"reason": "gate errors", "startedAt": "2026-03-01T12:00:00Z"}
        status["history"] = [
            {"time": "2026-03-01T12:00:00Z", "step": 1, "weight": 50, "event": "RollingBack",
             "gate": "errors", "value": 0.2, "bound": "<= 0.05"},
            {"time": "not a time", "step": 1, "weight": 50, "event": "Broken"},
        ]  # fmt: skip
    return {
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "status": status,
    }


def migration(name: str, created: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created},
        "spec": {
            "waves": [
                {"name": "low", "rollouts": ["a"]},
                {"name": "high", "selector": {"matchLabels": {"risk": "high"}}},
            ]
        },
        "status": status or {},
    }


def test_member_views_keep_what_a_migration_reads() -> None:
    store = Store()
    store.put("Rollout", rollout("a", "RollingBack"))
    view = store.members("shop")["a"]
    assert view.phase == "RollingBack" and view.rollback_reason == "gate errors"
    assert [h.gate for h in view.history] == ["errors"]  # an entry that does not parse is left out


def test_a_member_of_a_wave_not_started_waits_then_a_held_migration_stalls_it() -> None:
    store = Store()
    store.put("Rollout", rollout("a"))
    store.put("Rollout", rollout("b", risk="high"))
    assert store.migration_gate("shop", "b") is None  # no Migration
    started = {
        "phase": "Progressing",
        "waves": [{"name": "low", "startedAt": "2026-03-01T12:00:00Z"}],
    }
    store.put("Migration", migration("m", "2026-03-01T11:00:00Z", started))
    gate = store.migration_gate("shop", "b")
    assert gate is not None and not gate.stalled
    assert gate.message == "waiting for Migration m to start wave 1 (high)"
    assert store.migration_gate("shop", "a") is None  # its wave started
    store.put("Migration", migration("m", "2026-03-01T11:00:00Z", {**started, "phase": "Held"}))
    gate = store.migration_gate("shop", "b")
    assert gate is not None and gate.stalled and "Migration m is Held" in gate.message
    assert store.migration_gate("shop", "a") is None  # Held: its started wave goes on
    store.put(
        "Migration", migration("m", "2026-03-01T11:00:00Z", {**started, "phase": "RolledBack"})
    )
    gate = store.migration_gate("shop", "a")
    assert gate is not None and gate.stalled


def test_the_oldest_migration_owns_a_rollout() -> None:
    store = Store()
    store.put("Rollout", rollout("a"))
    store.put("Migration", migration("later", "2026-03-02T00:00:00Z"))
    store.put("Migration", migration("first", "2026-03-01T00:00:00Z"))
    assert store.owners("shop") == {"a": "first"}
    gate = store.migration_gate("shop", "a")
    assert gate is not None and "Migration first" in gate.message
    store.drop("Migration", "shop", "first")
    assert store.owners("shop") == {"a": "later"}


def test_finished_migrations_have_no_worker() -> None:
    body = {
        "metadata": {"generation": 2},
        "status": {"phase": "RolledBack", "observedGeneration": 2},
    }
    assert not migration_needs_work(body)
    assert migration_needs_work({**body, "status": {"phase": "Succeeded", "observedGeneration": 2}})
    assert migration_needs_work(
        {**body, "status": {"phase": "RolledBack", "observedGeneration": 1}}
    )


def test_a_rollout_waiting_for_its_wave_moves_nothing_then_starts() -> None:
    spec = make_spec()
    waiting = "waiting for Migration m to start wave 1 (high)"
    d = decide(spec, None, observe(migration_waiting=waiting))
    assert d.status.phase == "Waiting" and d.status.message == waiting
    progressing = d.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "WaitingForMigration"
    stalled = d.status.condition("Stalled")
    assert stalled is not None and stalled.status == "False"
    assert not [a for a in d.actions if type(a).__name__ == "SetWeight"]
    started = decide(spec, d.status, replace(observe(), migration_waiting=None))
    assert started.status.phase == "Progressing"


def test_an_older_rollout_event_never_replaces_a_newer_summary() -> None:
    store = Store()
    newer_body = {
        "metadata": {"namespace": "ns", "name": "orders", "resourceVersion": "20"},
        "status": {"phase": "Succeeded", "weight": 100},
    }
    older_body = {
        "metadata": {"namespace": "ns", "name": "orders", "resourceVersion": "12"},
        "status": {"phase": "Progressing", "weight": 50},
    }
    store.put("Rollout", newer_body)
    store.put("Rollout", older_body)
    assert store.rollout_phase("ns", "orders") == (True, "Succeeded")
    store.drop("Rollout", "ns", "orders")
    store.put("Rollout", older_body)  # recreated: a fresh object starts over
    assert store.rollout_phase("ns", "orders") == (True, "Progressing")
