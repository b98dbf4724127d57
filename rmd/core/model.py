"""Values shared by the pure core and the edges: what goes in, what comes out.

Nothing here does I/O. The allocation state machine (``rmd.core.allocator``) takes these
events, returns these actions, and answers with these views. The Kubernetes adapter turns
pods into :class:`PodObservation`; the HTTP API turns views into JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TypeAlias


class TaskManagerState(enum.StrEnum):
    """The TaskManager life cycle of API.md: requested → pending → registered → releasing."""

    REQUESTED = "requested"  # pod create sent, not yet confirmed
    PENDING = "pending"  # pod exists, TaskManager not registered
    REGISTERED = "registered"
    RELEASING = "releasing"  # pod delete decided or sent


class ReleaseReason(enum.StrEnum):
    """Why the daemon deletes (or cancels) a TaskManager pod. Used as a metric label."""

    IDLE = "idle"  # registered, no slots for resourcemanager.taskmanager-timeout
    EXCESS = "excess"  # demand dropped before the pod registered (cancelled)
    REGISTRATION_TIMEOUT = "registration-timeout"
    HEARTBEAT_TIMEOUT = "heartbeat-timeout"
    FAILED = "failed"  # pod phase Failed or a container terminated: clean the pod up
    DEREGISTERED = "deregistered"  # the TaskManager said goodbye (DELETE /v1/taskmanagers/{id})
    ORPHAN = "orphan"  # a pod with our labels that the daemon does not know
    UNSCHEDULABLE = "unschedulable"  # found unscheduled on recovery


class LossReason(enum.StrEnum):
    """Why a TaskManager was lost without the daemon asking for it."""

    POD_DELETED = "pod-deleted"
    POD_FAILED = "pod-failed"
    CONTAINER_TERMINATED = "container-terminated"
    POD_MISSING = "pod-missing"  # absent from a full resync
    CREATE_FAILED = "create-failed"
    REGISTRATION_TIMEOUT = "registration-timeout"
    HEARTBEAT_TIMEOUT = "heartbeat-timeout"


@dataclass(frozen=True, slots=True)
class PodObservation:
    """What the daemon needs to know of one TaskManager pod, as the API server shows it."""

    name: str
    phase: str = "Pending"  # Pending | Running | Succeeded | Failed | Unknown
    node_name: str | None = None
    pod_ip: str | None = None
    deleting: bool = False  # metadata.deletionTimestamp is set
    # PodScheduled=False with reason Unschedulable: the scheduler's message.
    unschedulable_message: str | None = None
    # A container waiting for a reason that needs a human (ErrImagePull, ImagePullBackOff,
    # InvalidImageName, CreateContainerConfigError, ...): (reason, message).
    waiting_problem: tuple[str, str] | None = None
    # Any container terminated: its exit code.
    terminated_exit_code: int | None = None
    # metadata.uid: not used by the core; the edges name the pod in Kubernetes Events by it.
    uid: str | None = None
    # metadata.labels["rmd.dev/state"]: not used by the core; the edges' labeler starts from it
    state_label: str | None = None

    @property
    def scheduled(self) -> bool:
        return self.node_name is not None

    @property
    def finished(self) -> bool:
        return self.phase in ("Failed", "Succeeded") or self.terminated_exit_code is not None


# ---------------------------------------------------------------------------- actions
# The core returns actions; the edges carry them out (effects) or record them (notices).


@dataclass(frozen=True, slots=True)
class CreatePod:
    """Create the TaskManager pod ``name``; report back with create_succeeded/create_failed."""

    name: str


@dataclass(frozen=True, slots=True)
class DeletePod:
    """Delete the pod ``name``; a 404 counts as done (report with pod_deleted)."""

    name: str
    reason: ReleaseReason
    # Sent again for a pod a LIST still shows (the first delete may have been lost): the
    # pod was already counted as deleted once.
    resent: bool = False


@dataclass(frozen=True, slots=True)
class TaskManagerChanged:
    """A TaskManager moved between states (``None`` = did not exist / is gone)."""

    taskmanager_id: str
    old: TaskManagerState | None
    new: TaskManagerState | None
    reason: str


@dataclass(frozen=True, slots=True)
class TaskManagerLost:
    """A TaskManager went away without the daemon asking; its slots went back to demand."""

    taskmanager_id: str
    reason: LossReason
    was_registered: bool
    jobs_affected: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskManagerRegistered:
    taskmanager_id: str
    startup_seconds: float  # create sent (or pod adopted) → registered
    recovered: bool = False  # a TaskManager adopted at start-up registered again


@dataclass(frozen=True, slots=True)
class SlotsAllocated:
    job_id: str
    slot_ids: tuple[str, ...]
    # For each slot, how long the demand it fulfils had been waiting (requirement → slot).
    waited_seconds: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class SlotsFreed:
    job_id: str
    slot_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class StartFailure:
    """A TaskManager failed to start (create error, died or timed out before registering)."""

    taskmanager_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CreateRetryScheduled:
    """A pod create failed because the API server could not be reached (connection error,
    429, 5xx): not the pod's fault, so no start failure; the same create is sent again in
    ``retry_in`` seconds."""

    taskmanager_id: str
    reason: str  # e.g. ConnectionError, ServiceUnavailable
    message: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class PodProblem:
    """A pod needs a human: image pull errors, unschedulable. Reported once per change."""

    taskmanager_id: str
    reason: str  # e.g. ErrImagePull, ImagePullBackOff, Unschedulable
    message: str


@dataclass(frozen=True, slots=True)
class StartsThrottled:
    """The start-failure rate limit tripped: no pod is created before ``until``."""

    failures_in_window: int
    until: float  # wall-clock seconds since the epoch (Clock.wall())


@dataclass(frozen=True, slots=True)
class RecoveryFigures:
    """What one start-up recovery found and did."""

    jobs_restored: int  # jobs read back from the stored state
    slots_declared: int  # their declared slots, summed
    slots_reserved: int  # slots of adopted TaskManagers kept for the jobs that held them
    adopted: int  # live pods kept
    deleted: int  # finished or unscheduled pods deleted
    reregistered: int  # adopted TaskManagers that registered again
    not_reregistered: int  # adopted TaskManagers lost before they registered again


@dataclass(frozen=True, slots=True)
class RecoveryCompleted:
    """Every TaskManager adopted at start-up has registered again or is gone."""

    figures: RecoveryFigures
    seconds: float  # adoption → the last adopted TaskManager settled


Effect: TypeAlias = CreatePod | DeletePod
# A closed union: the edges map every notice with ``match`` and ``typing.assert_never``, so a
# new kind of notice that one of them does not handle fails type checking.
Notice: TypeAlias = (
    TaskManagerChanged
    | TaskManagerLost
    | TaskManagerRegistered
    | SlotsAllocated
    | SlotsFreed
    | StartFailure
    | CreateRetryScheduled
    | PodProblem
    | StartsThrottled
    | RecoveryCompleted
)
Action: TypeAlias = Effect | Notice


# ---------------------------------------------------------------------------- errors


class CoreError(Exception):
    """A request the core refuses; the HTTP layer maps each subclass to a status."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnknownJob(CoreError):
    """404."""


class UnknownTaskManager(CoreError):
    """404 (heartbeat/deregister of an id the daemon does not know)."""


class RegistrationRefused(CoreError):
    """403: the id is not a pod this daemon created or recovered, or it is being released."""


class SlotCountMismatch(CoreError):
    """409: a TaskManager offers another number of slots than its pod was created for."""


# ---------------------------------------------------------------------------- views


@dataclass(frozen=True, slots=True)
class SlotView:
    slot_id: str
    taskmanager_id: str
    job_id: str | None
    address: str | None


@dataclass(frozen=True, slots=True)
class ProblemView:
    taskmanager_id: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class JobView:
    job_id: str
    slots_required: int
    slots_allocated: int
    slots: tuple[SlotView, ...]
    # Why the job cannot be fulfilled by the pods that exist or are coming (the slot cap,
    # the start-failure limit, pod problems); None while everything is on its way.
    unfulfilled_reason: str | None = None
    problems: tuple[ProblemView, ...] = ()
    # Since when the oldest of its unmet slots waits (wall-clock seconds); None when fulfilled.
    waiting_since: float | None = None

    @property
    def fulfilled(self) -> bool:
        return self.slots_allocated >= self.slots_required


@dataclass(frozen=True, slots=True)
class JobSummary:
    """A :class:`JobView` without its slot list: what a poller needs, at a cost that does not
    grow with the job's size. ``version`` changes whenever the requirement or a slot of the
    job changes (with the reason and problems it makes an ETag)."""

    job_id: str
    slots_required: int
    slots_allocated: int
    version: str
    unfulfilled_reason: str | None = None
    problems: tuple[ProblemView, ...] = ()
    waiting_since: float | None = None  # wall time since which the oldest unmet slot waits

    @property
    def fulfilled(self) -> bool:
        return self.slots_allocated >= self.slots_required


@dataclass(frozen=True, slots=True)
class TaskManagerView:
    taskmanager_id: str
    state: TaskManagerState
    slots_total: int
    slots: tuple[SlotView, ...]
    address: str | None
    idle_since: float | None  # wall-clock seconds since the epoch (Clock.wall())
    problem: ProblemView | None = None
    pod_phase: str | None = None
    node_name: str | None = None
    # Idle past the idle timeout and kept: its free slots are needed as a warm spare.
    kept_as_spare: bool = False
    # Releasing while its create is unanswered: the pod delete is sent once the pod exists.
    delete_waits_for_create: bool = False
    created_at: float | None = None  # wall-clock seconds: its create was sent, or it was adopted

    @property
    def slots_allocated(self) -> int:
        return sum(1 for slot in self.slots if slot.job_id is not None)


@dataclass(frozen=True, slots=True)
class StatusView:
    taskmanagers: dict[str, int]  # by state, every state present
    slots_total: int  # slots of registered TaskManagers
    slots_free: int
    slots_allocated: int
    jobs: int
    pending_slot_demand: int  # required but not allocated, over all jobs
    starts_throttled_until: float | None = None
    extra: dict[str, int] = field(default_factory=dict)
    jobs_waiting: int = 0  # jobs with unmet slots
    oldest_wait_seconds: float = 0.0  # how long the longest-waiting unmet slot has waited
    # Requested and pending TaskManagers by why they are not registered yet (see
    # rmd.core.views.pending_reason), every reason of PENDING_REASONS present.
    pending_by_reason: dict[str, int] = field(default_factory=dict)
