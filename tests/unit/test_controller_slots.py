"""A lane's slots: traffic writes take the next free thread first, others in arrival order;
a waiter cancelled before or as it is handed a slot never loses one."""

from __future__ import annotations

import asyncio

import pytest

from segue.controller.slots import OTHER, TRAFFIC, Slots
from tests.unit.waiting import until


async def _hold(
    slots: Slots, priority: int, name: str, order: list[str], gate: asyncio.Event
) -> None:
    async with slots.taken(priority):
        order.append(name)
        await gate.wait()


class Busy:
    """One slot, held by "busy" until ``gate`` is set; ``queue`` adds waiters behind it."""

    def __init__(self) -> None:
        self.slots = Slots(1)
        self.order: list[str] = []
        self.gate = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> asyncio.Task[None]:
        busy = self._task(OTHER, "busy")
        await until(lambda: self.order == ["busy"])
        return busy

    async def queue(self, *waiters: tuple[int, str]) -> list[asyncio.Task[None]]:
        tasks = [self._task(priority, name) for priority, name in waiters]
        await until(lambda: self.slots.waiting == len(waiters))
        return tasks

    def _task(self, priority: int, name: str) -> asyncio.Task[None]:
        return asyncio.create_task(_hold(self.slots, priority, name, self.order, self.gate))


def test_traffic_writes_take_the_next_free_slot_before_others_that_came_first() -> None:
    async def scenario() -> list[str]:
        lane = Busy()
        busy = await lane.start()
        waiters = await lane.queue(
            (OTHER, "status a"), (OTHER, "status b"), (TRAFFIC, "route a"), (TRAFFIC, "route b")
        )
        lane.gate.set()
        await asyncio.gather(busy, *waiters)
        return lane.order

    assert asyncio.run(scenario()) == ["busy", "route a", "route b", "status a", "status b"]


def test_no_more_than_the_slots_are_held_at_once() -> None:
    async def scenario() -> int:
        slots = Slots(3)
        held = peak = 0

        async def one(priority: int) -> None:
            nonlocal held, peak
            async with slots.taken(priority):
                held += 1
                peak = max(peak, held)
                await asyncio.sleep(0.001)
                held -= 1

        await asyncio.gather(*(one(i % 2) for i in range(40)))
        return peak

    assert asyncio.run(scenario()) == 3


def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    async def scenario() -> list[str]:
        lane = Busy()
        busy = await lane.start()
        gone, later = await lane.queue((TRAFFIC, "gone"), (OTHER, "later"))
        gone.cancel()
        lane.gate.set()
        await asyncio.gather(busy, later)
        with pytest.raises(asyncio.CancelledError):
            await gone
        # Free again: taken at once.
        async with lane.slots.taken():
            lane.order.append("after")
        return lane.order

    assert asyncio.run(scenario()) == ["busy", "later", "after"]


def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    async def scenario() -> list[str]:
        slots = Slots(1)
        order: list[str] = []
        gate = asyncio.Event()
        gate.set()
        async with slots.taken():  # this task holds the only slot
            handed = asyncio.create_task(_hold(slots, TRAFFIC, "handed", order, gate))
            later = asyncio.create_task(_hold(slots, OTHER, "later", order, gate))
            await until(lambda: slots.waiting == 2)
        # Leaving the block handed the slot to "handed", which is cancelled before it runs.
        handed.cancel()
        await asyncio.wait_for(later, timeout=5)
        with pytest.raises(asyncio.CancelledError):
            await handed
        return order

    assert asyncio.run(scenario()) == ["later"]


def test_a_lane_needs_a_slot() -> None:
    with pytest.raises(ValueError):
        Slots(0)
