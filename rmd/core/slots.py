"""The allocator's mutable records: TaskManagers with their slots, jobs with their demand.

The records keep their own counters consistent (a slot is taken by at most one job, a job's
waiting demand is exactly ``required - allocated``); the policy — which slot, which job,
when — lives in :mod:`rmd.core.allocator`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from rmd.core.model import ProblemView, ReleaseReason, TaskManagerState


def slot_id(taskmanager_id: str, index: int) -> str:
    return f"{taskmanager_id}/{index}"


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
        return self.state in (TaskManagerState.REQUESTED, TaskManagerState.PENDING)

    @property
    def is_scheduled(self) -> bool:
        return self.node_name is not None

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


@dataclass(eq=False, kw_only=True)
class JobRecord:
    job_id: str
    required: int = 0
    # TaskManager name -> indices of this job's slots there.
    slots: dict[str, set[int]] = field(default_factory=dict)
    allocated: int = 0
    # One monotonic timestamp per unit of unmet demand, oldest first.
    waiting: deque[float] = field(default_factory=deque)

    @property
    def unmet(self) -> int:
        return len(self.waiting)

    def set_required(self, required: int, *, now: float) -> None:
        """New total requirement; extra demand waits from ``now``; less drops the newest first.

        Slots above the new requirement stay allocated: the caller frees them.
        """
        self.required = required
        wanted = max(0, required - self.allocated)
        while len(self.waiting) > wanted:
            self.waiting.pop()
        self.waiting.extend([now] * (wanted - len(self.waiting)))

    def add_slot(self, taskmanager: str, index: int) -> float:
        """Record a slot given to this job; when the demand it fulfils started waiting."""
        self.slots.setdefault(taskmanager, set()).add(index)
        self.allocated += 1
        return self.waiting.popleft()

    def remove_slot(self, taskmanager: str, index: int, *, now: float) -> None:
        """Forget a slot; if the job still requires it, the demand waits again from ``now``."""
        indices = self.slots[taskmanager]
        indices.remove(index)
        if not indices:
            del self.slots[taskmanager]
        self.allocated -= 1
        if self.allocated + len(self.waiting) < self.required:
            self.waiting.append(now)
