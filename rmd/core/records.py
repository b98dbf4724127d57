"""The allocator's mutable records: TaskManagers with their slots, jobs with their demand,
and the index of TaskManagers by name and by state.

The records keep their own counters consistent (a slot is taken by at most one job, a job's
waiting demand is exactly ``required - allocated``; the index files every TaskManager under
exactly its state); the policy — which slot, which job, when — lives in
:mod:`rmd.core.allocator`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from rmd.core.model import ProblemView, ReleaseReason, TaskManagerChanged, TaskManagerState

COMING = (TaskManagerState.REQUESTED, TaskManagerState.PENDING)
LIVE = (*COMING, TaskManagerState.REGISTERED)


def slot_id(taskmanager_id: str, index: int) -> str:
    return f"{taskmanager_id}/{index}"


@dataclass(frozen=True, slots=True)
class CreateRetry:
    """A pod create that could not reach the API server, to be sent again ``at`` (monotonic)."""

    at: float
    error: ProblemView


@dataclass(eq=False, kw_only=True)
class TaskManagerRecord:
    name: str
    # Creation order: (attempt, index) for our names, so "by name" sorts 1-2 before 1-10.
    order: tuple[int, int, str]
    state: TaskManagerState
    created_at: float  # monotonic: create sent, or adopted
    slots_total: int  # expected until registration, then what the TaskManager reported
    adopted: bool = False  # recovered on start-up: not counted as supply, never cancelled
    # Monotonic time the pod was first known to exist (create answered, seen by the watch, or
    # listed at adoption); a LIST started before it may not show the pod yet.
    confirmed_at: float | None = None
    # Cancelled while its create was in flight: the DeletePod waits for the create to land
    # (a delete sent first would 404 and the pod created after it would leak).
    delete_when_created: ReleaseReason | None = None
    # Its create failed because the API server could not be reached: no create is in flight
    # until the retry is due. ``create_retries``: such failures in a row (for the backoff).
    create_retry: CreateRetry | None = None
    create_retries: int = 0
    release_reason: ReleaseReason | None = None  # why the pod is being deleted (releasing)
    address: str | None = None
    # Registered TaskManagers only: the job holding each slot (None = free).
    slot_jobs: list[str | None] = field(default_factory=list)
    allocated: int = 0
    idle_since: float | None = None  # monotonic; registered with no allocated slot
    idle_since_wall: float | None = None
    idle_checked: bool = False  # idle deadline passed and the TaskManager was kept
    # Monotonic: since when the external usage source (with the gate on) has reported this
    # TaskManager idle without a break; None = busy or unknown.
    externally_idle_since: float | None = None
    last_heartbeat: float | None = None
    pod_phase: str | None = None
    node_name: str | None = None
    problem: ProblemView | None = None
    reported_problems: set[str] = field(default_factory=set)

    @property
    def free(self) -> int:
        return len(self.slot_jobs) - self.allocated if self.is_registered else 0

    @property
    def is_registered(self) -> bool:
        return self.state is TaskManagerState.REGISTERED

    @property
    def is_coming(self) -> bool:
        """Created (or adopted) and not registered yet."""
        return self.state in COMING

    @property
    def is_scheduled(self) -> bool:
        return self.node_name is not None

    @property
    def awaits_create_retry(self) -> bool:
        return self.create_retry is not None

    def confirm(self, *, now: float) -> None:
        """The pod is known to exist: no create needs to be sent again."""
        if self.confirmed_at is None:
            self.confirmed_at = now
        self.create_retry = None

    def take_slot(self, job_id: str) -> int:
        """Give the lowest free slot to ``job_id``; its index."""
        index = self.slot_jobs.index(None)
        self.slot_jobs[index] = job_id
        self.allocated += 1
        return index

    def release_slot(self, index: int) -> None:
        if self.slot_jobs[index] is None:
            raise ValueError(f"slot {slot_id(self.name, index)} is not allocated")
        self.slot_jobs[index] = None
        self.allocated -= 1

    def refresh_idle(self, *, now: float, wall: float) -> None:
        """Idle means registered with no slot allocated; keep since when (``now``/``wall``)."""
        if self.is_registered and self.allocated == 0:
            if self.idle_since is None:
                self.idle_since = now
                self.idle_since_wall = wall
                self.idle_checked = False
        else:
            self.stop_idling()

    def stop_idling(self) -> None:
        self.idle_since = self.idle_since_wall = None
        self.idle_checked = False

    def set_externally_idle(self, since: float | None) -> None:
        """Since when the external usage source has reported this TaskManager idle without a
        break (monotonic); None: busy or unknown. A change is a new deadline, checked again."""
        if self.externally_idle_since != since:
            self.externally_idle_since = since
            self.idle_checked = False


@dataclass(eq=False, kw_only=True)
class JobRecord:
    job_id: str
    # Which declaration of this id (a job removed and declared again is a new one), and how
    # often its requirement or slots changed since: together the job's version.
    incarnation: int = 0
    changes: int = 0
    required: int = 0
    # Who declares it, when not the HTTP API (e.g. "flink": the follower of Flink's REST
    # API); kept across restarts, so the follower knows its jobs again.
    origin: str | None = None
    # TaskManager name -> indices of this job's slots there.
    slots: dict[str, set[int]] = field(default_factory=dict)
    allocated: int = 0
    # One monotonic timestamp per unit of unmet demand, oldest first.
    waiting: deque[float] = field(default_factory=deque)

    @property
    def unmet(self) -> int:
        return len(self.waiting)

    @property
    def version(self) -> str:
        """Changes whenever the requirement or any slot of the job changes."""
        return f"{self.incarnation}.{self.changes}"

    def set_required(self, required: int, *, now: float) -> None:
        """New total requirement; extra demand waits from ``now``; less drops the newest first.

        Slots above the new requirement stay allocated: the caller frees them.
        """
        if required != self.required:
            self.changes += 1
        self.required = required
        wanted = max(0, required - self.allocated)
        while len(self.waiting) > wanted:
            self.waiting.pop()
        self.waiting.extend([now] * (wanted - len(self.waiting)))

    def add_slot(self, taskmanager: str, index: int) -> float:
        """Record a slot given to this job; when the demand it fulfils started waiting."""
        self.slots.setdefault(taskmanager, set()).add(index)
        self.allocated += 1
        self.changes += 1
        return self.waiting.popleft()

    def remove_slot(self, taskmanager: str, index: int, *, now: float) -> None:
        """Forget a slot; if the job still requires it, the demand waits again from ``now``."""
        indices = self.slots[taskmanager]
        indices.remove(index)
        if not indices:
            del self.slots[taskmanager]
        self.allocated -= 1
        self.changes += 1
        if self.allocated + len(self.waiting) < self.required:
            self.waiting.append(now)


class TaskManagerIndex:
    """Every TaskManager the allocator knows, by name and by state.

    State changes go through :meth:`add`, :meth:`set_state` and :meth:`forget`, which keep
    both maps in step and describe each change as a :class:`TaskManagerChanged` notice.
    Those, and :meth:`touch`, note the TaskManager as touched: its timers may have come
    earlier, and the allocator arms them again (:meth:`take_touched`).
    """

    def __init__(self) -> None:
        self._by_name: dict[str, TaskManagerRecord] = {}
        self._by_state: dict[TaskManagerState, dict[str, TaskManagerRecord]] = {
            state: {} for state in TaskManagerState
        }
        self._touched: dict[str, None] = {}  # an ordered set
        # How many TaskManagers were added, changed state or were forgotten: only grows.
        self.moves = 0

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[TaskManagerRecord]:
        """In the order they became known; safe to change the index while iterating."""
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> TaskManagerRecord | None:
        return self._by_name.get(name)

    def __getitem__(self, name: str) -> TaskManagerRecord:
        return self._by_name[name]

    def add(self, tm: TaskManagerRecord, *, reason: str) -> TaskManagerChanged:
        if tm.name in self._by_name:
            raise ValueError(f"bug: TaskManager {tm.name} is already known")
        self._by_name[tm.name] = tm
        self._by_state[tm.state][tm.name] = tm
        self._touched[tm.name] = None
        self.moves += 1
        return TaskManagerChanged(tm.name, None, tm.state, reason)

    def set_state(
        self, tm: TaskManagerRecord, new: TaskManagerState, *, reason: str
    ) -> TaskManagerChanged:
        old = tm.state
        del self._by_state[old][tm.name]
        tm.state = new
        self._by_state[new][tm.name] = tm
        self._touched[tm.name] = None
        self.moves += 1
        return TaskManagerChanged(tm.name, old, new, reason)

    def forget(self, tm: TaskManagerRecord, *, reason: str) -> TaskManagerChanged:
        del self._by_name[tm.name]
        del self._by_state[tm.state][tm.name]
        self.moves += 1
        return TaskManagerChanged(tm.name, tm.state, None, reason)

    def touch(self, tm: TaskManagerRecord) -> None:
        """A timer of ``tm`` may have started or come earlier (a create sent again, its pod
        confirmed, a registration)."""
        self._touched[tm.name] = None

    def take_touched(self) -> list[TaskManagerRecord]:
        """The known TaskManagers touched since the last call."""
        touched = [tm for name in self._touched if (tm := self._by_name.get(name)) is not None]
        self._touched.clear()
        return touched

    def in_states(self, *states: TaskManagerState) -> list[TaskManagerRecord]:
        return [tm for state in states for tm in self._by_state[state].values()]

    def count(self, *states: TaskManagerState) -> int:
        return sum(len(self._by_state[state]) for state in states)

    def in_creation_order(self) -> list[TaskManagerRecord]:
        return sorted(self._by_name.values(), key=lambda tm: tm.order)
