"""Long polls on jobs (``GET /v1/jobs/{id}?wait=``) that cost nothing while they wait.

A waiter sleeps on its job's event. After every event the engine calls :meth:`changed`,
which compares the version of each job someone waits for (O(1) each: see
:meth:`rmd.core.allocator.Allocator.job_version`) with the one its waiters saw, and wakes
only those whose job changed — not every waiter on every change of any job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class JobWaiters:
    def __init__(self, version: Callable[[str], str | None]) -> None:
        self._version = version
        # job id -> (the version its waiters saw, the event they sleep on)
        self._waiting: dict[str, tuple[str | None, asyncio.Event]] = {}

    def __len__(self) -> int:
        """Jobs someone waits for (or waited for, until their next change)."""
        return len(self._waiting)

    async def wait(self, job_id: str, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """True as soon as ``predicate()`` holds (checked when the job's version changes),
        False when ``timeout`` seconds pass first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            entry = self._waiting.get(job_id)
            if entry is None:
                entry = self._waiting[job_id] = (self._version(job_id), asyncio.Event())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await entry[1].wait()
        return True

    def changed(self) -> None:
        """Something happened: wake the waiters of every job whose version moved."""
        for job_id, (seen, event) in list(self._waiting.items()):
            if self._version(job_id) != seen:
                del self._waiting[job_id]
                event.set()
