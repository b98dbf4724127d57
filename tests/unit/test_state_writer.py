"""The state writer: coalesced writes, the latest state wins, declarations answered together
once their write succeeded (group commit), and an API outage that loses nothing.

The store is an in-memory stand-in for the ConfigMap (the real one is exercised against the
real API server by tests/integration/test_daemon_recovery.py); it fails like the real one,
with :class:`StateStoreError`, when told to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rmd.core.recovery import StateSnapshot, job_state
from rmd.kube.statestore import StateStoreError
from rmd.retry import Backoff
from rmd.statewriter import StateWriter


class MemoryStore:
    def __init__(self) -> None:
        self.writes: list[StateSnapshot] = []
        self.down = False

    async def write(self, snapshot: StateSnapshot) -> None:
        await asyncio.sleep(0.01)  # a round trip
        if self.down:
            raise StateStoreError("cannot write: connection refused", status=0, transient=True)
        self.writes.append(snapshot)


class Demand:
    """What the allocator's snapshot would say: job -> declared slots; and its generation,
    which :meth:`declare` moves as the allocator's moves with its stored state."""

    def __init__(self) -> None:
        self.jobs: dict[str, int] = {}
        self.generation = 0
        self.snapshots_taken = 0

    def declare(self, job_id: str, slots: int) -> None:
        if self.jobs.get(job_id) != slots:
            self.jobs[job_id] = slots
            self.generation += 1

    def current_generation(self) -> int:
        return self.generation

    def snapshot(self) -> StateSnapshot:
        self.snapshots_taken += 1
        return StateSnapshot(jobs=tuple(job_state(j, n, {}) for j, n in self.jobs.items()))


@asynccontextmanager
async def running(
    writer: StateWriter,
) -> AsyncIterator[StateWriter]:
    task = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def make_writer(
    store: MemoryStore, demand: Demand, *, min_interval: float = 0.2, ack_timeout: float = 2.0
) -> StateWriter:
    return StateWriter(
        snapshot=demand.snapshot,
        store=store,
        min_interval=min_interval,
        ack_timeout=ack_timeout,
        backoff=Backoff(base=0.05, cap=0.1),
    )


async def test_a_burst_of_declarations_is_one_write_and_all_are_answered_by_it() -> None:
    store, demand = MemoryStore(), Demand()
    async with running(make_writer(store, demand)) as writer:
        demand.jobs["first"] = 1
        writer.changed()
        assert await writer.stored()
        assert store.writes == [demand.snapshot()]

        # Within the write interval: twenty declarations wait for the same, single write.
        async def declare(number: int) -> bool:
            demand.jobs[f"job-{number}"] = number
            writer.changed()
            return await writer.stored()

        answers = await asyncio.gather(*(declare(n) for n in range(20)))
        assert all(answers)
        assert len(store.writes) == 2
        assert store.writes[-1] == demand.snapshot()  # the latest state, all 21 jobs


async def test_nothing_is_written_when_the_state_did_not_change() -> None:
    store, demand = MemoryStore(), Demand()
    demand.jobs["a"] = 2
    writer = make_writer(store, demand)
    writer.assume_stored(demand.snapshot())  # as read at recovery
    async with running(writer):
        writer.changed()  # e.g. the same declaration again
        assert await writer.stored()
    assert store.writes == []


async def test_no_snapshot_is_taken_while_the_stored_generation_stands() -> None:
    store, demand = MemoryStore(), Demand()
    writer = StateWriter(
        snapshot=demand.snapshot,
        generation=demand.current_generation,
        store=store,
        min_interval=0.0,
        backoff=Backoff(base=0.05, cap=0.1),
    )
    async with running(writer):
        demand.declare("a", 2)
        writer.changed()
        assert await writer.stored()
        assert store.writes == [demand.snapshot()]
        taken = demand.snapshots_taken
        for _ in range(50):  # e.g. heartbeats and pod events that change nothing stored
            writer.changed()
            assert await writer.stored()
        demand.declare("a", 2)  # the same declaration again: the generation stands
        writer.changed()
        assert await writer.stored()
        assert demand.snapshots_taken == taken
        demand.declare("a", 3)
        writer.changed()
        assert await writer.stored()
        assert demand.snapshots_taken > taken
        assert store.writes[-1] == demand.snapshot()
        assert len(store.writes) == 2


async def test_an_outage_answers_not_stored_keeps_the_demand_and_writes_it_when_back() -> None:
    store, demand = MemoryStore(), Demand()
    store.down = True
    async with running(make_writer(store, demand, ack_timeout=0.3)) as writer:
        demand.jobs["a"] = 4
        writer.changed()
        assert await writer.stored() is False
        assert writer.failing
        demand.jobs["b"] = 2  # still changing meanwhile
        writer.changed()
        store.down = False
        assert await writer.stored() is True
        assert store.writes == [demand.snapshot()]  # only the newest state, once
        assert not writer.failing
