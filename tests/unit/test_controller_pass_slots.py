"""Ordinary passes share a bounded number of slots; a pass that may pull traffic back never
waits for one."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from segue.controller.workers import Supervisor, Worker


def rollout(name: str, abort: bool = False) -> dict[str, Any]:
    annotations = {"segue.dev/abort": "bad"} if abort else {}
    return {
        "metadata": {"namespace": "ns", "name": name, "generation": 1,
                     "resourceVersion": "1", "annotations": annotations},
        "spec": {},
        "status": {"phase": "Progressing", "observedGeneration": 1},
    }  # fmt: skip


def aborted(body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"]["annotations"]["segue.dev/abort"] = "bad"
    body["metadata"]["resourceVersion"] = "2"
    return body


def is_urgent(worker: Worker) -> bool:
    return "segue.dev/abort" in (worker.obj["metadata"].get("annotations") or {})


class Passes:
    """Passes that block until released, counting how many run at once."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.most = 0
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def reconcile(self, worker: Worker) -> float | None:
        name = worker.key[1]
        self.running.add(name)
        self.started.append(name)
        self.most = max(self.most, len(self.running))
        try:
            if not is_urgent(worker):
                await self.release.wait()
        finally:
            self.running.discard(name)
        return 300.0


async def until(check: Any) -> None:
    """Let the workers run until ``check()`` holds (at most 5 s)."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never happened")


def test_ordinary_passes_share_the_slots_and_an_abort_skips_the_queue():
    async def scenario() -> None:
        passes = Passes()
        supervisor = Supervisor(passes.reconcile, urgent=is_urgent, max_passes=2)
        for i in range(5):
            supervisor.rollout_event("ADDED", rollout(f"r{i}"))
        await until(lambda: len(passes.started) == 2)
        await asyncio.sleep(0.05)
        assert passes.most == 2  # three wait for a slot
        supervisor.rollout_event("ADDED", rollout("aborting", abort=True))
        await until(lambda: "aborting" in passes.started)
        passes.release.set()
        await until(lambda: len(set(passes.started)) == 6)
        assert passes.most <= 3  # two slots, and the abort beside them
        await supervisor.stop()

    asyncio.run(scenario())


def test_a_pass_waiting_for_a_slot_goes_at_once_when_it_turns_urgent():
    async def scenario() -> None:
        passes = Passes()
        supervisor = Supervisor(passes.reconcile, urgent=is_urgent, max_passes=1)
        supervisor.rollout_event("ADDED", rollout("busy"))
        await until(lambda: passes.started == ["busy"])
        waiting = rollout("waiting")
        supervisor.rollout_event("ADDED", waiting)
        await asyncio.sleep(0.05)
        assert passes.started == ["busy"]  # no slot
        supervisor.rollout_event("MODIFIED", aborted(waiting))  # kubectl segue abort
        await until(lambda: "waiting" in passes.started)
        assert "busy" in passes.running  # the slot was never freed
        await supervisor.stop()

    asyncio.run(scenario())


def test_a_worker_stopped_while_waiting_keeps_no_slot():
    async def scenario() -> None:
        passes = Passes()
        supervisor = Supervisor(passes.reconcile, urgent=is_urgent, max_passes=1)
        supervisor.rollout_event("ADDED", rollout("busy"))
        await until(lambda: passes.started == ["busy"])
        supervisor.rollout_event("ADDED", rollout("gone"))
        await asyncio.sleep(0.05)
        supervisor.rollout_event("DELETED", rollout("gone"))
        passes.release.set()
        await until(lambda: not passes.running)
        passes.release.clear()
        # The one slot is free again: a new Rollout's pass takes it.
        supervisor.rollout_event("ADDED", rollout("next"))
        await until(lambda: "next" in passes.started)
        assert "gone" not in passes.started
        passes.release.set()
        await supervisor.stop()

    asyncio.run(scenario())


def test_without_an_urgency_test_no_pass_waits():
    async def scenario() -> None:
        passes = Passes()
        supervisor = Supervisor(passes.reconcile, max_passes=1)  # as the Migrations' runs
        for i in range(3):
            supervisor.rollout_event("ADDED", rollout(f"m{i}"))
        await until(lambda: len(passes.started) == 3)
        passes.release.set()
        await supervisor.stop()

    asyncio.run(scenario())
