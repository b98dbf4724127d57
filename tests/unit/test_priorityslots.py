"""The pod gateway's limit: never more holders than the limit; creates and deletes before
label patches, both before Events; in order of arrival within a priority; cancelled waiters
lose nothing."""

from __future__ import annotations

import asyncio

import pytest

from rmd.kube.priorityslots import Priority, PrioritySlots


class Recorder:
    def __init__(self, slots: PrioritySlots) -> None:
        self.slots = slots
        self.order: list[str] = []
        self.holding = 0
        self.most = 0
        self.release = asyncio.Event()

    async def hold(self, name: str, priority: Priority) -> None:
        async with self.slots.slot(priority):
            self.order.append(name)
            self.holding += 1
            self.most = max(self.most, self.holding)
            await self.release.wait()
            self.holding -= 1


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)  # let the tasks started so far reach their first wait


async def test_writes_waiting_go_before_labels_waiting_and_the_limit_holds() -> None:
    recorder = Recorder(PrioritySlots(2))
    tasks = [asyncio.create_task(recorder.hold(f"first-{i}", Priority.WRITE)) for i in range(2)]
    await settle()
    tasks += [
        asyncio.create_task(recorder.hold("label-1", Priority.LABEL)),
        asyncio.create_task(recorder.hold("create-1", Priority.WRITE)),
        asyncio.create_task(recorder.hold("label-2", Priority.LABEL)),
        asyncio.create_task(recorder.hold("create-2", Priority.WRITE)),
    ]
    await settle()
    assert recorder.order == ["first-0", "first-1"]
    assert (recorder.slots.waiting(Priority.WRITE), recorder.slots.waiting(Priority.LABEL)) == (
        2,
        2,
    )
    recorder.release.set()
    await asyncio.gather(*tasks)
    assert recorder.order == ["first-0", "first-1", "create-1", "create-2", "label-1", "label-2"]
    assert recorder.most == 2


async def test_a_label_takes_a_free_slot_when_no_write_waits() -> None:
    slots = PrioritySlots(1)
    async with slots.slot(Priority.LABEL):
        assert slots.waiting(Priority.WRITE) == 0


async def test_events_wait_behind_writes_and_labels() -> None:
    recorder = Recorder(PrioritySlots(1))
    tasks = [asyncio.create_task(recorder.hold("first", Priority.WRITE))]
    await settle()
    tasks += [
        asyncio.create_task(recorder.hold("event-1", Priority.EVENT)),
        asyncio.create_task(recorder.hold("label-1", Priority.LABEL)),
        asyncio.create_task(recorder.hold("event-2", Priority.EVENT)),
        asyncio.create_task(recorder.hold("create-1", Priority.WRITE)),
    ]
    await settle()
    assert recorder.slots.waiting(Priority.EVENT) == 2
    recorder.release.set()
    await asyncio.gather(*tasks)
    assert recorder.order == ["first", "create-1", "label-1", "event-1", "event-2"]
    assert recorder.most == 1


async def test_an_event_takes_a_free_slot_when_nothing_else_waits() -> None:
    recorder = Recorder(PrioritySlots(2))
    holder = asyncio.create_task(recorder.hold("create", Priority.WRITE))
    await settle()
    event = asyncio.create_task(recorder.hold("event", Priority.EVENT))
    await settle()
    assert recorder.order == ["create", "event"]  # the second slot was free: no wait
    assert recorder.slots.waiting(Priority.EVENT) == 0
    recorder.release.set()
    await asyncio.gather(holder, event)


async def test_a_newcomer_does_not_overtake_a_waiter_of_its_priority() -> None:
    recorder = Recorder(PrioritySlots(1))
    first = asyncio.create_task(recorder.hold("first", Priority.LABEL))
    await settle()
    waiting = asyncio.create_task(recorder.hold("waiting", Priority.LABEL))
    await settle()
    recorder.release.set()  # first leaves; the slot goes to "waiting", not to a newcomer
    newcomer = asyncio.create_task(recorder.hold("newcomer", Priority.LABEL))
    await asyncio.gather(first, waiting, newcomer)
    assert recorder.order == ["first", "waiting", "newcomer"]


async def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    recorder = Recorder(PrioritySlots(1))
    holder = asyncio.create_task(recorder.hold("holder", Priority.WRITE))
    await settle()
    cancelled = asyncio.create_task(recorder.hold("cancelled", Priority.WRITE))
    after = asyncio.create_task(recorder.hold("after", Priority.LABEL))
    await settle()
    cancelled.cancel()
    await settle()
    recorder.release.set()
    await asyncio.gather(holder, after)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert recorder.order == ["holder", "after"]
    async with asyncio.timeout(1):  # the slot is free again: nothing leaked
        async with recorder.slots.slot(Priority.WRITE):
            pass


async def test_a_waiter_cancelled_as_the_slot_reaches_it_passes_the_slot_on() -> None:
    slots = PrioritySlots(1)
    entered: list[str] = []

    async def hold(name: str) -> None:
        async with slots.slot(Priority.WRITE):
            entered.append(name)

    async with slots.slot(Priority.WRITE):
        unlucky = asyncio.create_task(hold("unlucky"))
        await settle()
    unlucky.cancel()  # the slot was handed to it on release; it is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    async with asyncio.timeout(1):
        await hold("next")
    assert entered == ["next"]


def test_the_limit_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PrioritySlots(0)
