"""A concurrency limit whose waiters are served by priority, then in order of arrival.

The pod gateway's ``rmd.kubernetes.max-parallel-requests`` is one limit for creates, deletes
and ``rmd.dev/state`` label patches: a patch never adds to the API server's load beyond it.
But a label is for people reading ``kubectl``, a create is what a job waits for: during a
scale-out every registration wants a patch, and patches that took turns with creates would
halve the create rate. So creates and deletes go first; a patch takes a free slot only when
no create or delete waits for one. Kubernetes Events (:mod:`rmd.kube.events`) come last: they
take a slot only when no pod write and no label patch waits — during a scale-out every
created pod brings an Event, and Events that took turns with creates would slow the very
scale-out they report.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from enum import IntEnum


class Priority(IntEnum):
    """Lower goes first."""

    WRITE = 0  # pod creates and deletes
    LABEL = 1  # the rmd.dev/state label patches
    EVENT = 2  # Kubernetes Events


class PrioritySlots:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"PrioritySlots needs a limit of at least 1, got {limit}")
        self._free = limit
        self._waiters: dict[Priority, deque[asyncio.Future[None]]] = {
            priority: deque() for priority in Priority
        }

    @contextlib.asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        """Hold one slot for the block; wait for it behind every waiter of the same or a
        higher priority."""
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    def waiting(self, priority: Priority) -> int:
        return sum(1 for waiter in self._waiters[priority] if not waiter.done())

    async def _acquire(self, priority: Priority) -> None:
        ahead = any(self.waiting(level) for level in Priority if level <= priority)
        if self._free > 0 and not ahead:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[priority].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters[priority].remove(waiter)
            raise

    def _release(self) -> None:
        """Hand the slot straight to the first live waiter of the highest priority (so a
        newcomer cannot take it first), else free it."""
        for priority in Priority:
            queue = self._waiters[priority]
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1
