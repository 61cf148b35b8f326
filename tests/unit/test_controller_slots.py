"""A lane's slots: traffic writes take the next free thread first, others in arrival order;
a waiter cancelled before or as it is handed a slot never loses one."""

from __future__ import annotations

import asyncio

import pytest

from segue.controller.slots import OTHER, TRAFFIC, Slots


async def _hold(
    slots: Slots, priority: int, name: str, order: list[str], gate: asyncio.Event
) -> None:
    async with slots.taken(priority):
        order.append(name)
        await gate.wait()


def test_traffic_writes_take_the_next_free_slot_before_others_that_came_first() -> None:
    async def scenario() -> list[str]:
        slots = Slots(1)
        order: list[str] = []
        gate = asyncio.Event()
        first = asyncio.create_task(_hold(slots, OTHER, "busy", order, gate))
        await asyncio.sleep(0)
        tasks = [
            asyncio.create_task(_hold(slots, OTHER, "status a", order, gate)),
            asyncio.create_task(_hold(slots, OTHER, "status b", order, gate)),
            asyncio.create_task(_hold(slots, TRAFFIC, "route a", order, gate)),
            asyncio.create_task(_hold(slots, TRAFFIC, "route b", order, gate)),
        ]
        await asyncio.sleep(0)
        assert slots.waiting == 4
        gate.set()
        await asyncio.gather(first, *tasks)
        return order

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
        slots = Slots(1)
        order: list[str] = []
        gate = asyncio.Event()
        busy = asyncio.create_task(_hold(slots, OTHER, "busy", order, gate))
        await asyncio.sleep(0)
        gone = asyncio.create_task(_hold(slots, TRAFFIC, "gone", order, gate))
        later = asyncio.create_task(_hold(slots, OTHER, "later", order, gate))
        await asyncio.sleep(0)
        gone.cancel()
        gate.set()
        await asyncio.gather(busy, later)
        with pytest.raises(asyncio.CancelledError):
            await gone
        # Free again: taken at once.
        async with slots.taken():
            order.append("after")
        return order

    assert asyncio.run(scenario()) == ["busy", "later", "after"]


def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    async def scenario() -> list[str]:
        slots = Slots(1)
        order: list[str] = []
        gate = asyncio.Event()
        busy = asyncio.create_task(_hold(slots, OTHER, "busy", order, gate))
        await asyncio.sleep(0)
        handed = asyncio.create_task(_hold(slots, TRAFFIC, "handed", order, gate))
        later = asyncio.create_task(_hold(slots, OTHER, "later", order, gate))
        await asyncio.sleep(0)
        gate.set()
        await asyncio.sleep(0)  # busy leaves: the slot is handed to "handed"...
        handed.cancel()  # ...which is cancelled before it runs again
        await asyncio.gather(busy, later, return_exceptions=True)
        assert handed.cancelled()
        return order

    assert asyncio.run(scenario()) == ["busy", "later"]


def test_a_lane_needs_a_slot() -> None:
    with pytest.raises(ValueError):
        Slots(0)
