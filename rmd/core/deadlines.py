"""The allocator's timers: one min-heap of deadlines, invalidated lazily.

Each TaskManager has at most four timers (:class:`Timer`). Their true deadlines are a pure
function of the TaskManager's record (see
:meth:`rmd.core.lifecycle.TaskManagerLifecycle.deadline`); the queue only promises that every
true deadline has an entry *at or before* it. So a change that moves a deadline later — a
heartbeat, a stall forgiven, a timer stopped — costs nothing: when the old entry comes first,
its owner recomputes the true deadline and arms it again (or drops it). Only a change that
makes a deadline appear or come earlier must :meth:`DeadlineQueue.arm` it.

The earliest deadline is O(1) after the stale entries on top are dropped (amortised
O(log N) each); arming is O(log N); nothing walks every TaskManager.
"""

from __future__ import annotations

import enum
import heapq
import itertools


class Timer(enum.Enum):
    REGISTRATION = "registration timeout"
    HEARTBEAT = "heartbeat timeout"
    IDLE_RELEASE = "idle release"
    CREATE_RETRY = "create retry"


class DeadlineQueue:
    """Deadlines keyed by (TaskManager name, timer), the earliest first.

    One entry per key is valid: the one armed last. Superseded entries stay in the heap
    until they reach the top, then are dropped (lazy invalidation by sequence number).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, Timer]] = []
        self._armed: dict[tuple[str, Timer], tuple[float, int]] = {}
        self._sequence = itertools.count()

    def __len__(self) -> int:
        """Valid entries."""
        return len(self._armed)

    def arm(self, name: str, timer: Timer, at: float | None) -> None:
        """Make sure ``(name, timer)`` comes up no later than ``at`` (None: nothing to do). An
        entry armed earlier already covers a later deadline: its owner re-arms it when it
        comes first."""
        if at is None:
            return
        key = (name, timer)
        current = self._armed.get(key)
        if current is not None and current[0] <= at:
            return
        sequence = next(self._sequence)
        self._armed[key] = (at, sequence)
        heapq.heappush(self._heap, (at, sequence, name, timer))

    def first(self) -> tuple[float, str, Timer] | None:
        """The earliest valid entry (at, name, timer), None when empty."""
        heap = self._heap
        while heap:
            at, sequence, name, timer = heap[0]
            if self._armed.get((name, timer)) == (at, sequence):
                return at, name, timer
            heapq.heappop(heap)  # superseded by a later arm()
        return None

    def pop(self) -> None:
        """Remove the entry :meth:`first` returned."""
        if self.first() is None:
            raise IndexError("no deadline to pop")
        _, _, name, timer = heapq.heappop(self._heap)
        del self._armed[(name, timer)]
