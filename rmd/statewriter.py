"""When the daemon's state is written to the API server: coalesced, latest state wins, and
declarations answered only once stored (group commit).

Every change the engine applies calls :meth:`StateWriter.changed` (cheap: a counter and an
event). One task (:meth:`StateWriter.run`) asks the allocator's stored-state generation
(:meth:`rmd.core.allocator.Allocator.state_generation`): while it is the one last found
stored, nothing is built or compared (most events, e.g. a heartbeat or the answer to a label
patch, change nothing stored). Otherwise it takes the snapshot
(:meth:`rmd.core.allocator.Allocator.state_snapshot`); when that differs from what is stored
it writes it, at most one write per ``min_interval`` (a burst of declarations becomes one
write). A failed write is tried again with the project's backoff (full jitter), each time
with the newest state; nothing is queued, so an outage costs no backlog.

:meth:`StateWriter.stored` is what a ``PUT``/``DELETE`` of a job awaits before it answers: it
returns True once a write that began after the change succeeded (or nothing needed writing),
so an acknowledged declaration survives a SIGKILL. All requests waiting for the same write
are answered together by it. When no write succeeds within ``ack_timeout`` (the API server
is down) it returns False; the change stays in effect in memory (pods are still managed,
views still show it) and keeps being written until a write succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import structlog

from rmd.core.recovery import StateSnapshot
from rmd.kube.retry import KUBE_BACKOFF
from rmd.kube.statestore import StateStoreError
from rmd.retry import Backoff, Pacing

log = structlog.get_logger(__name__)

MIN_WRITE_INTERVAL = 0.25  # at most four writes a second
ACK_TIMEOUT = 10.0  # a declaration waits this long for its write before a 503


class StateStore(Protocol):
    async def write(self, snapshot: StateSnapshot) -> None: ...


class WriteOutcomes(Protocol):
    def state_written(self, *, result: str) -> None: ...


class StateWriter:
    def __init__(
        self,
        *,
        snapshot: Callable[[], StateSnapshot],
        generation: Callable[[], int] | None = None,
        store: StateStore,
        stored: StateSnapshot | None = None,
        metrics: WriteOutcomes | None = None,
        min_interval: float = MIN_WRITE_INTERVAL,
        ack_timeout: float = ACK_TIMEOUT,
        backoff: Backoff = KUBE_BACKOFF,
        pacing: Pacing | None = None,
    ) -> None:
        """``stored``: what the store holds now (see :meth:`assume_stored`). ``generation``:
        a number that changes whenever ``snapshot()`` would (None: compare every time)."""
        self._snapshot = snapshot
        self._generation = generation
        self._stored_generation: int | None = None  # the generation known to be stored
        self._store = store
        self._stored_state = stored if stored is not None else StateSnapshot()
        self._metrics = metrics
        self._min_interval = min_interval
        self._ack_timeout = ack_timeout
        self._backoff = backoff
        self._pacing = pacing or Pacing()
        self._changes = 0  # changes seen
        self._stored_changes = 0  # changes known to be stored
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._last_write_at = -float("inf")
        self.failing = False  # the last write failed
        self._disabled = False

    def assume_stored(self, snapshot: StateSnapshot | None) -> None:
        """What the store holds, as read at recovery (nothing is written while it stays so);
        None: the state cannot be kept (no access to the store): nothing is ever written and
        changes are answered at once."""
        if snapshot is None:
            self._disabled = True
        else:
            self._stored_state = snapshot
            self._stored_generation = None

    def changed(self) -> None:
        """The allocator's state may have changed (called after every applied event)."""
        self._changes += 1
        self._wake.set()

    async def stored(self) -> bool:
        """Wait until every change so far is stored; False after ``ack_timeout``."""
        if self._disabled:
            return True
        target = self._changes
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._ack_timeout):  # not wait_for: see rmd.driver
                while self._stored_changes < target:
                    progress = self._progress
                    await progress.wait()
        return self._stored_changes >= target

    async def run(self) -> None:
        """Write until cancelled (not needed once :meth:`assume_stored` got None)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        failures = 0
        while True:
            target = self._changes
            generation = self._current_generation()
            if generation is not None and generation == self._stored_generation:
                self._mark_stored(target)  # nothing stored changed: no snapshot to build
                return
            snapshot = self._snapshot()
            if snapshot == self._stored_state:
                self._stored_state = snapshot  # the same object: the next comparison is cheap
                self._stored_generation = generation
                self._mark_stored(target)
                return
            pause = self._last_write_at + self._min_interval - self._pacing.monotonic()
            if pause > 0:  # coalesce: changes arriving meanwhile go into this write
                await self._pacing.sleep(pause)
                target = self._changes
                generation = self._current_generation()
                snapshot = self._snapshot()
            self._last_write_at = self._pacing.monotonic()
            try:
                await self._store.write(snapshot)
            except StateStoreError as exc:
                failures += 1
                delay = self._backoff.delay(failures, uniform=self._pacing.uniform)
                self._record("error")
                if not self.failing:
                    log.warning(
                        "state_write_failed",
                        error=str(exc),
                        consequence="demand and assignments stay in effect in memory; "
                        "declarations are answered 503 until a write succeeds",
                        retry_in=round(delay, 3),
                    )
                self.failing = True
                await self._pacing.sleep(delay)
                continue
            self._stored_state = snapshot
            self._stored_generation = generation
            self._record("ok")
            if self.failing:
                log.info("state_write_recovered", failures=failures)
                self.failing = False
            self._mark_stored(target)
            return

    def _current_generation(self) -> int | None:
        return None if self._generation is None else self._generation()

    def _mark_stored(self, changes: int) -> None:
        if changes > self._stored_changes:
            self._stored_changes = changes
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    def _record(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.state_written(result=result)
