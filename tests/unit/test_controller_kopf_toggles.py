"""kopf's start-up readiness (a ToggleSet of one toggle per listed object) wakes its waiters
only when the set's state changes, not on every toggle added or dropped."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles

from segue.controller import kopf_toggles

OBJECTS = 300


def test_waiters_are_woken_once_when_every_object_is_indexed() -> None:
    assert kopf_toggles.install()  # the installed kopf is built as the patch expects

    async def scenario() -> None:
        indexed = aiotoggles.ToggleSet(all)
        checks = 0
        is_on = indexed.is_on

        def counted() -> bool:
            nonlocal checks
            checks += 1
            return is_on()

        indexed.is_on = counted  # type: ignore[method-assign]
        # As kopf does at start: a toggle per listed object, each object's worker waiting
        # for all of them, and each toggle dropped once its object is indexed.
        toggles = [await indexed.make_toggle(name=str(i)) for i in range(OBJECTS)]
        waiters = [asyncio.create_task(indexed.wait_for(True)) for _ in range(OBJECTS)]
        await asyncio.sleep(0)
        for toggle in toggles[:-1]:
            await indexed.drop_toggle(toggle)
            await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        await indexed.drop_toggle(toggles[-1])
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        # Unpatched, every drop woke every waiter: OBJECTS * OBJECTS checks.
        assert checks < 10 * OBJECTS

    asyncio.run(scenario())


def test_a_waiter_for_off_is_woken_when_the_first_toggle_is_made() -> None:
    kopf_toggles.install()

    async def scenario() -> None:
        indexed = aiotoggles.ToggleSet(all)
        waiter = asyncio.create_task(indexed.wait_for(False))
        await asyncio.sleep(0)
        assert not waiter.done()
        toggle = await indexed.make_toggle()
        await asyncio.wait_for(waiter, 5)
        back_on = asyncio.create_task(indexed.wait_for(True))
        await asyncio.sleep(0)
        await indexed.drop_toggle(toggle)
        await asyncio.wait_for(back_on, 5)

    asyncio.run(scenario())


def test_a_toggle_turned_on_still_wakes_its_waiters() -> None:
    kopf_toggles.install()

    async def scenario() -> None:
        paused = aiotoggles.ToggleSet(any)
        toggle = await paused.make_toggle(name="peer")
        waiter = asyncio.create_task(paused.wait_for(True))
        await asyncio.sleep(0)
        await toggle.turn_to(True)
        await asyncio.wait_for(waiter, 5)

    asyncio.run(scenario())
