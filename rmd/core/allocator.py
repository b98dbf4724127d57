"""The allocation state machine: jobs' slot demand in, TaskManager pods and slots out.

Pure: no I/O, no asyncio, time from an injected :class:`~rmd.core.clock.Clock`. The edges call
one method per event (from one thread, never concurrently); every mutating method returns the
actions it decided — effects (:class:`CreatePod`, :class:`DeletePod`) for the Kubernetes edge to
carry out and notices for logs and metrics. After every event the allocator reconciles:

1. allocate free slots of registered TaskManagers to waiting demand (jobs first-come
   first-served, slots packed onto the busiest TaskManagers so the others stay idle);
2. release TaskManagers idle for ``idle_timeout`` that no demand or spare needs (with an
   external usage source, e.g. Flink's REST API, only once it too has reported them idle for
   ``idle_timeout``: see :meth:`Allocator.observe_external_usage`);
3. cancel pods on their way that demand no longer needs (unscheduled first, newest first);
4. create the pods still missing, within ``max_slots``, ``max_pending_creates`` and the
   start-failure rate limit (:mod:`rmd.core.ratelimit`).

TaskManager life cycle: requested → pending → registered → releasing → gone. A TaskManager
with allocated slots is never released or cancelled by a decision of this class; when one is
lost, its slots go back to their jobs' demand and a replacement is requested.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rmd.core import explain
from rmd.core.clock import Clock
from rmd.core.model import (
    Action,
    CreatePod,
    DeletePod,
    JobView,
    LossReason,
    PodObservation,
    PodProblem,
    ProblemView,
    RegistrationRefused,
    ReleaseReason,
    SlotsAllocated,
    SlotsFreed,
    StartFailure,
    StartsThrottled,
    StatusView,
    TaskManagerChanged,
    TaskManagerLost,
    TaskManagerRegistered,
    TaskManagerState,
    TaskManagerView,
    UnknownJob,
    UnknownTaskManager,
)
from rmd.core.naming import PodNameParts, parse_taskmanager_pod_name, taskmanager_pod_name
from rmd.core.ratelimit import StartFailureLimiter
from rmd.core.slots import JobRecord, TaskManagerRecord, slot_id
from rmd.core.views import JobShortfall, job_shortfalls, job_slot_views, taskmanager_view

_FAILURE_WINDOW = 60.0
_COMING = (TaskManagerState.REQUESTED, TaskManagerState.PENDING)


@dataclass(frozen=True, kw_only=True)
class AllocatorSettings:
    cluster_id: str
    slots_per_taskmanager: int  # taskmanager.numberOfTaskSlots
    idle_timeout: float = 30.0  # resourcemanager.taskmanager-timeout (s)
    registration_timeout: float = 300.0  # resourcemanager.taskmanager-registration.timeout
    heartbeat_timeout: float = 50.0  # heartbeat.timeout
    max_start_failures_per_minute: float = 10  # resourcemanager.start-worker.max-failure-rate
    start_retry_interval: float = 3.0  # resourcemanager.start-worker.retry-interval
    max_slots: int | None = None  # slotmanager.number-of-slots.max (None = unbounded)
    redundant_taskmanagers: int = 0  # slotmanager.redundant-taskmanager-num
    max_pending_creates: int | None = None  # cap on TaskManagers in state requested at once
    # An external usage source (Flink's REST API) has the last word on idleness: an idle
    # TaskManager is released only after it has also reported it idle for idle_timeout.
    external_usage_gate: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not self.cluster_id:
            problems.append("cluster_id must not be empty")
        if self.slots_per_taskmanager < 1:
            problems.append("slots_per_taskmanager must be >= 1")
        for name in ("idle_timeout", "registration_timeout", "heartbeat_timeout"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0")
        if self.start_retry_interval < 0:
            problems.append("start_retry_interval must be >= 0")
        if self.max_slots is not None and self.max_slots < 0:
            problems.append("max_slots must be >= 0 (or None for no limit)")
        if self.redundant_taskmanagers < 0:
            problems.append("redundant_taskmanagers must be >= 0")
        if self.max_pending_creates is not None and self.max_pending_creates < 1:
            problems.append("max_pending_creates must be >= 1 (or None for no limit)")
        if problems:
            raise ValueError("; ".join(problems))


class Allocator:
    def __init__(self, settings: AllocatorSettings, *, clock: Clock, attempt: int = 1) -> None:
        if attempt < 1:
            raise ValueError(f"attempt starts at 1 (got {attempt})")
        self._settings = settings
        self._clock = clock
        self._attempt = attempt
        self._next_index = 1
        self._taskmanagers: dict[str, TaskManagerRecord] = {}
        self._by_state: dict[TaskManagerState, dict[str, TaskManagerRecord]] = {
            state: {} for state in TaskManagerState
        }
        self._jobs: dict[str, JobRecord] = {}  # insertion order = first declaration (FIFO)
        self._orphans_deleting: set[str] = set()
        self._limiter = StartFailureLimiter(
            max_failures_per_minute=settings.max_start_failures_per_minute,
            retry_interval=settings.start_retry_interval,
            window=_FAILURE_WINDOW,
        )
        self._last_create_failure: ProblemView | None = None
        self._last_create_failure_at = -math.inf

    # ------------------------------------------------------------------ identity

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def settings(self) -> AllocatorSettings:
        return self._settings

    @staticmethod
    def attempt_of(pod_name: str, cluster_id: str) -> int | None:
        parts = parse_taskmanager_pod_name(pod_name, cluster_id)
        return None if parts is None else parts.attempt

    def is_known_pod(self, name: str) -> bool:
        return name in self._taskmanagers

    # ------------------------------------------------------------------ JobMaster side

    def declare(self, job_id: str, slots: int) -> list[Action]:
        """The job's TOTAL requirement now; the same number again changes nothing."""
        if slots < 0:
            raise ValueError(f"a job requires 0 or more slots (got {slots})")
        now = self._clock.monotonic()
        out: list[Action] = []
        job = self._jobs.get(job_id)
        if job is None:
            job = self._jobs[job_id] = JobRecord(job_id=job_id)
        job.set_required(slots, now=now)
        if job.allocated > slots:
            self._free_job_slots(
                job, count=job.allocated - slots, reason="requirement lowered", out=out
            )
        self._reconcile(out)
        return out

    def remove_job(self, job_id: str) -> list[Action]:
        job = self._job(job_id)
        out: list[Action] = []
        job.set_required(0, now=self._clock.monotonic())
        self._free_job_slots(job, count=job.allocated, reason="job removed", out=out)
        del self._jobs[job_id]
        self._reconcile(out)
        return out

    # ------------------------------------------------------------------ TaskManager side

    def register(self, taskmanager_id: str, *, address: str, slots: int) -> list[Action]:
        if slots < 1:
            raise ValueError(f"a TaskManager offers 1 or more slots (got {slots})")
        tm = self._taskmanagers.get(taskmanager_id)
        if tm is None:
            raise RegistrationRefused(
                f"TaskManager {taskmanager_id!r} was not created by this daemon (or was already "
                f"released): only pods this resource manager started or recovered may register; "
                f"stop this TaskManager"
            )
        if tm.state is TaskManagerState.RELEASING:
            raise RegistrationRefused(
                f"TaskManager {taskmanager_id!r} is being released and its pod deleted; "
                f"it must not register again"
            )
        now = self._clock.monotonic()
        tm.address = address
        tm.last_heartbeat = now
        if tm.is_registered:
            return []
        out: list[Action] = []
        tm.slots_total = slots
        tm.slot_jobs = [None] * slots
        tm.allocated = 0
        tm.problem = None
        tm.adopted = False
        self._set_state(tm, TaskManagerState.REGISTERED, reason="registered", out=out)
        out.append(TaskManagerRegistered(taskmanager_id, startup_seconds=now - tm.created_at))
        self._limiter.record_success()
        self._update_idle(tm, now)
        self._reconcile(out)
        return out

    def heartbeat(self, taskmanager_id: str) -> list[Action]:
        tm = self._taskmanagers.get(taskmanager_id)
        if tm is None:
            raise UnknownTaskManager(
                f"TaskManager {taskmanager_id!r} is not known to this resource manager; "
                f"register again"
            )
        if tm.state is TaskManagerState.RELEASING:
            raise UnknownTaskManager(
                f"TaskManager {taskmanager_id!r} is being released; it is no longer served"
            )
        if not tm.is_registered:
            raise UnknownTaskManager(
                f"TaskManager {taskmanager_id!r} has not registered (state {tm.state}); "
                f"register first"
            )
        tm.last_heartbeat = self._clock.monotonic()
        return []

    def deregister(self, taskmanager_id: str) -> list[Action]:
        tm = self._taskmanagers.get(taskmanager_id)
        if tm is None:
            raise UnknownTaskManager(
                f"TaskManager {taskmanager_id!r} is not known to this resource manager"
            )
        if tm.state is TaskManagerState.RELEASING:
            return []
        out: list[Action] = []
        if not tm.is_registered:  # gave up before it ever served: a failed start
            self._start_failure(tm.name, "TaskManager said goodbye before registering", out)
        self._free_taskmanager_slots(tm, reason=f"TaskManager {tm.name} deregistered", out=out)
        self._release(tm, ReleaseReason.DEREGISTERED, out=out)
        self._reconcile(out)
        return out

    # ------------------------------------------------------------------ external usage

    def observe_external_usage(self, busy: Mapping[str, bool]) -> list[Action]:
        """A full report of the external usage source: TaskManager id -> busy.

        Only with ``external_usage_gate``. A registered TaskManager's release timer runs from
        the later of "no slot allocated here" and "reported idle without a break since"; a
        busy report stops it, and a TaskManager missing from the report counts as unknown (no
        timer). Ids the allocator does not know are ignored.
        """
        self._require_gate()
        now = self._clock.monotonic()
        for tm in self._by_state[TaskManagerState.REGISTERED].values():
            reported_idle = tm.name in busy and not busy[tm.name]
            if not reported_idle:
                self._set_externally_idle(tm, None)
            elif tm.externally_idle_since is None:
                self._set_externally_idle(tm, now)
        out: list[Action] = []
        self._reconcile(out)
        return out

    def external_usage_unknown(self) -> list[Action]:
        """The external usage source cannot be read: every release timer stops until it
        reports again (and then starts from that report)."""
        self._require_gate()
        for tm in self._by_state[TaskManagerState.REGISTERED].values():
            self._set_externally_idle(tm, None)
        return []

    # ------------------------------------------------------------------ Kubernetes side

    def create_succeeded(self, name: str) -> list[Action]:
        tm = self._taskmanagers.get(name)
        if tm is None:
            return []
        self._confirm(tm)
        out: list[Action] = []
        if tm.state is TaskManagerState.RELEASING:
            self._send_deferred_delete(tm, out)
            return out
        if tm.state is not TaskManagerState.REQUESTED:
            return []
        self._set_state(tm, TaskManagerState.PENDING, reason="pod created", out=out)
        self._reconcile(out)
        return out

    def create_failed(self, name: str, *, reason: str, message: str) -> list[Action]:
        tm = self._taskmanagers.get(name)
        if tm is None:
            return []
        out: list[Action] = []
        if tm.state is TaskManagerState.RELEASING:
            self._forget(tm, reason="pod create failed after it was cancelled", out=out)
        elif tm.is_coming:
            self._last_create_failure = ProblemView(name, reason, message)
            self._last_create_failure_at = self._clock.monotonic()
            self._lose(
                tm,
                LossReason.CREATE_FAILED,
                delete=None,
                detail=f"pod create failed: {reason}: {message}",
                out=out,
            )
        self._reconcile(out)
        return out

    def pod_observed(self, pod: PodObservation) -> list[Action]:
        out: list[Action] = []
        self._observe_pod(pod, out)
        self._reconcile(out)
        return out

    def pod_deleted(self, name: str) -> list[Action]:
        self._orphans_deleting.discard(name)
        tm = self._taskmanagers.get(name)
        if tm is None:
            return []
        out: list[Action] = []
        self._pod_gone(tm, LossReason.POD_DELETED, out)
        self._reconcile(out)
        return out

    def resync(
        self, pods: Sequence[PodObservation], *, listed_at: float | None = None
    ) -> list[Action]:
        """A full LIST of our pods: whatever is not in it is gone.

        ``listed_at`` (monotonic) is when the LIST request was sent. A pod known to exist only
        since then may be missing from it without being gone (its create was answered after
        the list was read), so it is not judged by this list; nor are creates in flight.
        Releasing TaskManagers whose pod is still listed, not being deleted, get their delete
        sent again (an earlier one failed or raced the create).
        """
        present = {pod.name: pod for pod in pods}
        self._orphans_deleting &= set(present)
        out: list[Action] = []
        for tm in list(self._taskmanagers.values()):
            if tm.name in present or tm.state is TaskManagerState.REQUESTED:
                continue
            if listed_at is not None and (tm.confirmed_at is None or tm.confirmed_at > listed_at):
                continue
            self._pod_gone(tm, LossReason.POD_MISSING, out)
        for pod in pods:
            going = self._taskmanagers.get(pod.name)
            if (
                going is not None
                and going.state is TaskManagerState.RELEASING
                and going.delete_when_created is None
                and going.release_reason is not None
                and not pod.deleting
            ):
                out.append(DeletePod(going.name, going.release_reason))
            self._observe_pod(pod, out)
        self._reconcile(out)
        return out

    def adopt(self, pods: Sequence[PodObservation]) -> list[Action]:
        """Start-up recovery: keep the live pods of earlier attempts, delete the dead ones.

        Adopted pods wait for their TaskManagers to register (registration timer from now);
        they are neither counted as supply nor cancelled. New pods use attempt = highest
        attempt found + 1.
        """
        now = self._clock.monotonic()
        out: list[Action] = []
        highest_attempt = 0
        for pod in pods:
            parts = parse_taskmanager_pod_name(pod.name, self._settings.cluster_id)
            if parts is None:
                continue
            highest_attempt = max(highest_attempt, parts.attempt)
            self._reserve_name(parts)
            if pod.name in self._taskmanagers:
                self._observe_pod(pod, out)
                continue
            self._adopt_pod(pod, parts, now=now, out=out)
        if highest_attempt >= self._attempt:
            self._attempt = highest_attempt + 1
            self._next_index = 1  # no pod can carry the new attempt yet
        self._reconcile(out)
        return out

    # ------------------------------------------------------------------ time

    def tick(self) -> list[Action]:
        """Fire every timer due at ``clock.monotonic()``."""
        now = self._clock.monotonic()
        settings = self._settings
        out: list[Action] = []
        for tm in list(self._taskmanagers.values()):
            if tm.is_coming and tm.created_at + settings.registration_timeout <= now:
                waiting_for = f" ({tm.problem.reason}: {tm.problem.message})" if tm.problem else ""
                self._lose(
                    tm,
                    LossReason.REGISTRATION_TIMEOUT,
                    delete=ReleaseReason.REGISTRATION_TIMEOUT,
                    detail=(
                        f"not registered within {settings.registration_timeout:g} s{waiting_for}"
                    ),
                    out=out,
                )
            elif (
                tm.is_registered
                and tm.last_heartbeat is not None
                and tm.last_heartbeat + settings.heartbeat_timeout <= now
            ):
                self._lose(
                    tm,
                    LossReason.HEARTBEAT_TIMEOUT,
                    delete=ReleaseReason.HEARTBEAT_TIMEOUT,
                    detail=f"no heartbeat for {settings.heartbeat_timeout:g} s",
                    out=out,
                )
        self._reconcile(out)
        return out

    def next_deadline(self) -> float | None:
        """Monotonic time of the next timer (idle release, registration or heartbeat
        timeout, end of a start pause); None when nothing is scheduled."""
        settings = self._settings
        deadlines: list[float] = []
        for tm in self._taskmanagers.values():
            if tm.is_coming:
                deadlines.append(tm.created_at + settings.registration_timeout)
            elif tm.is_registered:
                if tm.last_heartbeat is not None:
                    deadlines.append(tm.last_heartbeat + settings.heartbeat_timeout)
                release_at = self._idle_release_at(tm)
                if release_at is not None and not tm.idle_checked:
                    deadlines.append(release_at)
        limiter_deadline = self._limiter.next_deadline(self._clock.monotonic())
        if limiter_deadline is not None:
            deadlines.append(limiter_deadline)
        return min(deadlines, default=None)

    # ------------------------------------------------------------------ views

    def job_view(self, job_id: str) -> JobView:
        job = self._job(job_id)
        return self._job_view(job, self._shortfalls().get(job_id))

    def job_views(self) -> list[JobView]:
        shortfalls = self._shortfalls()
        return [self._job_view(job, shortfalls.get(job.job_id)) for job in self._jobs.values()]

    def taskmanager_view(self, taskmanager_id: str) -> TaskManagerView:
        tm = self._taskmanagers.get(taskmanager_id)
        if tm is None:
            raise UnknownTaskManager(
                f"TaskManager {taskmanager_id!r} is not known to this resource manager"
            )
        return taskmanager_view(tm)

    def taskmanager_views(self) -> list[TaskManagerView]:
        ordered = sorted(self._taskmanagers.values(), key=lambda tm: tm.order)
        return [taskmanager_view(tm) for tm in ordered]

    def status(self) -> StatusView:
        now = self._clock.monotonic()
        counts = {state.value: 0 for state in TaskManagerState}
        slots_total = slots_allocated = slots_coming = 0
        for tm in self._taskmanagers.values():
            counts[tm.state.value] += 1
            if tm.is_registered:
                slots_total += tm.slots_total
                slots_allocated += tm.allocated
            elif tm.is_coming:
                slots_coming += tm.slots_total
        paused_until = self._limiter.paused_until(now)
        return StatusView(
            taskmanagers=counts,
            slots_total=slots_total,
            slots_free=slots_total - slots_allocated,
            slots_allocated=slots_allocated,
            jobs=len(self._jobs),
            pending_slot_demand=sum(job.unmet for job in self._jobs.values()),
            starts_throttled_until=None if paused_until is None else self._wall(paused_until),
            extra={
                "slots_coming": slots_coming,
                "start_failures_last_minute": self._limiter.failures_in_window(now),
                "orphan_pods_deleting": len(self._orphans_deleting),
            },
        )

    # ================================================================== internals

    def _job(self, job_id: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"job {job_id!r} is not known: declare its requirements first")
        return job

    def _live_taskmanagers(self) -> list[TaskManagerRecord]:
        """Requested, pending and registered: everything not being released."""
        return self._in_states(*_COMING, TaskManagerState.REGISTERED)

    def _wall(self, monotonic: float) -> float:
        return self._clock.wall() + (monotonic - self._clock.monotonic())

    # ------------------------------------------------------------------ state changes

    def _add(self, tm: TaskManagerRecord, *, reason: str, out: list[Action]) -> None:
        self._taskmanagers[tm.name] = tm
        self._by_state[tm.state][tm.name] = tm
        out.append(TaskManagerChanged(tm.name, None, tm.state, reason))

    def _set_state(
        self, tm: TaskManagerRecord, new: TaskManagerState, *, reason: str, out: list[Action]
    ) -> None:
        old = tm.state
        del self._by_state[old][tm.name]
        tm.state = new
        self._by_state[new][tm.name] = tm
        out.append(TaskManagerChanged(tm.name, old, new, reason))

    def _forget(self, tm: TaskManagerRecord, *, reason: str, out: list[Action]) -> None:
        del self._taskmanagers[tm.name]
        del self._by_state[tm.state][tm.name]
        out.append(TaskManagerChanged(tm.name, tm.state, None, reason))

    def _in_states(self, *states: TaskManagerState) -> list[TaskManagerRecord]:
        return [tm for state in states for tm in self._by_state[state].values()]

    def _count_in(self, *states: TaskManagerState) -> int:
        return sum(len(self._by_state[state]) for state in states)

    def _release(self, tm: TaskManagerRecord, reason: ReleaseReason, *, out: list[Action]) -> None:
        """Decide to delete the pod. Slots must have been freed by the caller."""
        if tm.allocated:
            raise RuntimeError(f"bug: releasing {tm.name} with {tm.allocated} allocated slots")
        tm.idle_since = tm.idle_since_wall = None
        was_requested = tm.state is TaskManagerState.REQUESTED and tm.confirmed_at is None
        self._set_state(tm, TaskManagerState.RELEASING, reason=reason.value, out=out)
        tm.release_reason = reason
        if was_requested:
            tm.delete_when_created = reason  # sent once the create lands (or dropped if it fails)
        else:
            out.append(DeletePod(tm.name, reason))

    def _send_deferred_delete(self, tm: TaskManagerRecord, out: list[Action]) -> None:
        if tm.delete_when_created is not None:
            out.append(DeletePod(tm.name, tm.delete_when_created))
            tm.delete_when_created = None

    def _confirm(self, tm: TaskManagerRecord) -> None:
        if tm.confirmed_at is None:
            tm.confirmed_at = self._clock.monotonic()

    def _lose(
        self,
        tm: TaskManagerRecord,
        loss: LossReason,
        *,
        delete: ReleaseReason | None,
        detail: str,
        out: list[Action],
    ) -> None:
        """The TaskManager went away (or is given up): slots back to demand, pod cleaned up."""
        was_registered = tm.is_registered
        jobs = self._free_taskmanager_slots(
            tm, reason=f"TaskManager {tm.name} lost: {loss.value}", out=out
        )
        out.append(TaskManagerLost(tm.name, loss, was_registered, jobs))
        if not was_registered:
            self._start_failure(tm.name, detail, out)
        if delete is None:
            self._forget(tm, reason=loss.value, out=out)
        else:
            self._release(tm, delete, out=out)

    def _deleted_from_outside(self, tm: TaskManagerRecord, out: list[Action]) -> None:
        """Someone else is deleting the pod (kubectl, an eviction, the garbage collector).

        The TaskManager is going whatever its grace period: it is lost now, its slots go back
        to demand and a replacement is requested at once, instead of after the grace period
        (Flink waits for the DELETED event). The record stays ``releasing`` until the pod is
        gone, so the pod is neither counted as supply nor deleted a second time.
        """
        was_registered = tm.is_registered
        jobs = self._free_taskmanager_slots(
            tm, reason=f"TaskManager {tm.name} lost: {LossReason.POD_DELETED.value}", out=out
        )
        out.append(TaskManagerLost(tm.name, LossReason.POD_DELETED, was_registered, jobs))
        if not was_registered:
            self._start_failure(tm.name, "pod deleted before the TaskManager registered", out)
        tm.idle_since = tm.idle_since_wall = None
        self._set_state(tm, TaskManagerState.RELEASING, reason="pod being deleted", out=out)

    def _pod_gone(self, tm: TaskManagerRecord, loss: LossReason, out: list[Action]) -> None:
        if tm.state is TaskManagerState.RELEASING:
            self._forget(tm, reason="pod deleted", out=out)
            return
        detail = "pod deleted before the TaskManager registered"
        if loss is LossReason.POD_MISSING:
            detail = "pod missing from the pod list before the TaskManager registered"
        self._lose(tm, loss, delete=None, detail=detail, out=out)

    def _start_failure(self, name: str, detail: str, out: list[Action]) -> None:
        now = self._clock.monotonic()
        out.append(StartFailure(name, detail))
        paused_until = self._limiter.record_failure(now)
        if paused_until is not None:
            out.append(
                StartsThrottled(
                    failures_in_window=self._limiter.failures_in_window(now),
                    until=self._wall(paused_until),
                )
            )

    def _update_idle(self, tm: TaskManagerRecord, now: float) -> None:
        if tm.is_registered and tm.allocated == 0:
            if tm.idle_since is None:
                tm.idle_since = now
                tm.idle_since_wall = self._clock.wall()
                tm.idle_checked = False
        else:
            tm.idle_since = tm.idle_since_wall = None
            tm.idle_checked = False

    def _idle_release_at(self, tm: TaskManagerRecord) -> float | None:
        """When an idle TaskManager may be released; None while it is not idle (to rmd, or to
        the external usage source when the gate is on)."""
        if tm.idle_since is None:
            return None
        start = tm.idle_since
        if self._settings.external_usage_gate:
            if tm.externally_idle_since is None:
                return None
            start = max(start, tm.externally_idle_since)
        return start + self._settings.idle_timeout

    def _idle_due(self, tm: TaskManagerRecord, now: float) -> bool:
        release_at = self._idle_release_at(tm)
        return release_at is not None and release_at <= now

    def _set_externally_idle(self, tm: TaskManagerRecord, since: float | None) -> None:
        if tm.externally_idle_since != since:
            tm.externally_idle_since = since
            tm.idle_checked = False  # a new deadline: check it again

    def _require_gate(self) -> None:
        if not self._settings.external_usage_gate:
            raise RuntimeError("external usage reports need AllocatorSettings.external_usage_gate")

    # ------------------------------------------------------------------ pods

    def _reserve_name(self, parts: PodNameParts) -> None:
        """Never create a name that exists: skip indices seen in the current attempt."""
        if parts.attempt == self._attempt and parts.index >= self._next_index:
            self._next_index = parts.index + 1

    def _observe_pod(self, pod: PodObservation, out: list[Action]) -> None:
        parts = parse_taskmanager_pod_name(pod.name, self._settings.cluster_id)
        if parts is None:
            return
        self._reserve_name(parts)
        tm = self._taskmanagers.get(pod.name)
        if tm is None:
            if pod.name not in self._orphans_deleting and not pod.deleting:
                self._orphans_deleting.add(pod.name)
                out.append(DeletePod(pod.name, ReleaseReason.ORPHAN))
            return
        self._confirm(tm)
        tm.pod_phase = pod.phase
        tm.node_name = pod.node_name
        if tm.state is TaskManagerState.RELEASING:
            if not pod.deleting:
                self._send_deferred_delete(tm, out)
            return
        if pod.deleting:
            self._deleted_from_outside(tm, out)
            return
        if pod.finished:
            if pod.phase in ("Failed", "Succeeded"):
                loss, detail = LossReason.POD_FAILED, f"pod phase {pod.phase}"
            else:
                loss = LossReason.CONTAINER_TERMINATED
                detail = f"container terminated with exit code {pod.terminated_exit_code}"
            self._lose(tm, loss, delete=ReleaseReason.FAILED, detail=detail, out=out)
            return
        if tm.state is TaskManagerState.REQUESTED:
            self._set_state(tm, TaskManagerState.PENDING, reason="pod observed", out=out)
        if tm.is_registered:
            tm.problem = None
        else:
            self._note_problem(tm, pod, out)

    def _note_problem(self, tm: TaskManagerRecord, pod: PodObservation, out: list[Action]) -> None:
        if pod.waiting_problem is not None:
            reason, message = pod.waiting_problem
        elif pod.unschedulable_message is not None:
            reason, message = "Unschedulable", pod.unschedulable_message
        else:
            tm.problem = None
            return
        tm.problem = ProblemView(tm.name, reason, message)
        if reason not in tm.reported_problems:
            tm.reported_problems.add(reason)
            out.append(PodProblem(tm.name, reason, message))

    def _adopt_pod(
        self, pod: PodObservation, parts: PodNameParts, *, now: float, out: list[Action]
    ) -> None:
        delete_reason: ReleaseReason | None = None
        if pod.finished:
            delete_reason = ReleaseReason.FAILED
        elif not pod.scheduled:
            delete_reason = ReleaseReason.UNSCHEDULABLE
        live = delete_reason is None and not pod.deleting
        tm = TaskManagerRecord(
            name=pod.name,
            order=(parts.attempt, parts.index, pod.name),
            state=TaskManagerState.PENDING if live else TaskManagerState.RELEASING,
            created_at=now,
            slots_total=self._settings.slots_per_taskmanager,
            adopted=True,
            confirmed_at=now,
            pod_phase=pod.phase,
            node_name=pod.node_name,
        )
        if pod.deleting:
            self._add(tm, reason="recovered while deleting", out=out)
        elif delete_reason is not None:
            self._add(tm, reason=f"recovered {delete_reason}", out=out)
            tm.release_reason = delete_reason
            out.append(DeletePod(tm.name, delete_reason))
        else:
            self._add(tm, reason="recovered", out=out)
            self._note_problem(tm, pod, out)

    # ------------------------------------------------------------------ slots

    def _free_job_slots(
        self, job: JobRecord, *, count: int, reason: str, out: list[Action]
    ) -> None:
        """Free ``count`` of the job's slots, on the least-used TaskManagers first."""
        if count <= 0:
            return
        now = self._clock.monotonic()
        names = sorted(job.slots, key=lambda name: self._taskmanagers[name].order, reverse=True)
        names.sort(key=lambda name: self._taskmanagers[name].allocated)
        freed: list[str] = []
        for name in names:
            tm = self._taskmanagers[name]
            for index in sorted(job.slots[name], reverse=True):
                if len(freed) == count:
                    break
                tm.release_slot(index)
                job.remove_slot(name, index, now=now)
                freed.append(slot_id(name, index))
            self._update_idle(tm, now)
            if len(freed) == count:
                break
        out.append(SlotsFreed(job.job_id, tuple(freed), reason))

    def _free_taskmanager_slots(
        self, tm: TaskManagerRecord, *, reason: str, out: list[Action]
    ) -> tuple[str, ...]:
        """Free every slot of ``tm``; the demand goes back to the jobs. The jobs affected."""
        now = self._clock.monotonic()
        freed: dict[str, list[str]] = {}
        for index, job_id in enumerate(tm.slot_jobs):
            if job_id is None:
                continue
            tm.release_slot(index)
            self._jobs[job_id].remove_slot(tm.name, index, now=now)
            freed.setdefault(job_id, []).append(slot_id(tm.name, index))
        for job_id, slot_ids in freed.items():
            out.append(SlotsFreed(job_id, tuple(slot_ids), reason))
        self._update_idle(tm, now)
        return tuple(sorted(freed))

    def _allocate(self, now: float, out: list[Action]) -> None:
        """Give free registered slots to waiting demand: jobs FIFO, busiest TaskManager first."""
        waiting_jobs = [job for job in self._jobs.values() if job.unmet]
        if not waiting_jobs:
            return
        candidates = sorted(
            (tm for tm in self._by_state[TaskManagerState.REGISTERED].values() if tm.free > 0),
            key=lambda tm: (-tm.allocated, tm.order),
        )
        if not candidates:
            return
        capacity: float = math.inf
        if self._settings.max_slots is not None:
            allocated = sum(job.allocated for job in self._jobs.values())
            capacity = self._settings.max_slots - allocated
        position = 0
        for job in waiting_jobs:
            slot_ids: list[str] = []
            waited: list[float] = []
            while job.unmet and capacity > 0 and position < len(candidates):
                tm = candidates[position]
                if tm.free == 0:
                    position += 1
                    continue
                index = tm.take_slot(job.job_id)
                waiting_since = job.add_slot(tm.name, index)
                slot_ids.append(slot_id(tm.name, index))
                waited.append(now - waiting_since)
                capacity -= 1
                self._update_idle(tm, now)
            if slot_ids:
                out.append(SlotsAllocated(job.job_id, tuple(slot_ids), tuple(waited)))

    # ------------------------------------------------------------------ reconcile

    def _capped_unmet(self) -> int:
        """Unmet demand that max_slots allows to be served."""
        unmet = sum(job.unmet for job in self._jobs.values())
        if self._settings.max_slots is None:
            return unmet
        allocated = sum(job.allocated for job in self._jobs.values())
        return min(unmet, max(0, self._settings.max_slots - allocated))

    def _spare_slots(self) -> int:
        """Free slots to keep as warm spares: only while some job runs or waits."""
        if not any(job.required for job in self._jobs.values()):
            return 0
        return self._settings.redundant_taskmanagers * self._settings.slots_per_taskmanager

    def _reconcile(self, out: list[Action]) -> None:
        now = self._clock.monotonic()
        self._allocate(now, out)
        unmet = self._capped_unmet()
        target = unmet + self._spare_slots()
        registered = self._in_states(TaskManagerState.REGISTERED)
        free_registered = sum(tm.free for tm in registered)

        # Idle TaskManagers past their timeout go, unless demand or the spares need them.
        idle_due = sorted(
            (tm for tm in registered if self._idle_due(tm, now)),
            key=lambda tm: (tm.idle_since, tm.order),
        )
        for tm in idle_due:
            if free_registered - tm.free >= target:
                free_registered -= tm.free
                self._release(tm, ReleaseReason.IDLE, out=out)
            else:
                tm.idle_checked = True

        # Pods on their way that demand no longer needs are cancelled.
        coming = [tm for tm in self._in_states(*_COMING) if not tm.adopted]
        supply = free_registered + sum(tm.slots_total for tm in coming)
        if coming and supply - min(tm.slots_total for tm in coming) >= target:
            coming.sort(key=lambda tm: tm.order, reverse=True)  # newest first ...
            coming.sort(key=lambda tm: tm.is_scheduled)  # ... unscheduled before scheduled
            for tm in coming:
                if supply - tm.slots_total >= target:
                    supply -= tm.slots_total
                    self._release(tm, ReleaseReason.EXCESS, out=out)

        # Create what is missing; spares only once nothing is waiting to register.
        if supply < unmet:
            shortfall = unmet - supply
        elif supply < target and not self._count_in(*_COMING):
            shortfall = target - supply
        else:
            return
        self._create_pods(math.ceil(shortfall / self._settings.slots_per_taskmanager), now, out)

    def _create_pods(self, wanted: int, now: float, out: list[Action]) -> None:
        settings = self._settings
        spt = settings.slots_per_taskmanager
        if settings.max_slots is not None:
            used = sum(tm.slots_total for tm in self._live_taskmanagers())
            wanted = min(wanted, max(0, settings.max_slots - used) // spt)
        if settings.max_pending_creates is not None:
            requested = self._count_in(TaskManagerState.REQUESTED)
            wanted = min(wanted, max(0, settings.max_pending_creates - requested))
        allowance = self._limiter.creation_allowance(now=now, in_flight=self._count_in(*_COMING))
        if allowance is not None:
            wanted = min(wanted, allowance)
        for _ in range(wanted):
            self._create_pod(now, out)

    def _create_pod(self, now: float, out: list[Action]) -> None:
        while True:
            index = self._next_index
            self._next_index += 1
            name = taskmanager_pod_name(
                self._settings.cluster_id, attempt=self._attempt, index=index
            )
            if name not in self._taskmanagers and name not in self._orphans_deleting:
                break
        tm = TaskManagerRecord(
            name=name,
            order=(self._attempt, index, name),
            state=TaskManagerState.REQUESTED,
            created_at=now,
            slots_total=self._settings.slots_per_taskmanager,
        )
        self._add(tm, reason="slot demand", out=out)
        out.append(CreatePod(name))

    # ------------------------------------------------------------------ view helpers

    def _shortfalls(self) -> dict[str, JobShortfall]:
        return job_shortfalls(
            self._jobs.values(),
            self._live_taskmanagers(),
            slots_per_taskmanager=self._settings.slots_per_taskmanager,
            max_slots=self._settings.max_slots,
        )

    def _job_view(self, job: JobRecord, shortfall: JobShortfall | None) -> JobView:
        reasons: list[str] = []
        problems: list[ProblemView] = []
        if job.unmet and shortfall is not None:
            reasons.extend(self._waiting_reasons(job, shortfall))
            problems = self._problems_of_coming_pods()
            reasons.extend(
                explain.create_failure_reason(problem)
                if problem.taskmanager_id not in self._taskmanagers
                else explain.pod_problem_reason(problem)
                for problem in problems
            )
        return JobView(
            job_id=job.job_id,
            slots_required=job.required,
            slots_allocated=job.allocated,
            slots=job_slot_views(job, self._taskmanagers),
            unfulfilled_reason="; ".join(reasons) or None,
            problems=tuple(problems),
        )

    def _waiting_reasons(self, job: JobRecord, shortfall: JobShortfall) -> Iterable[str]:
        settings = self._settings
        if shortfall.beyond_cap and settings.max_slots is not None:
            yield explain.slot_cap_reason(
                short=shortfall.beyond_cap, required=job.required, max_slots=settings.max_slots
            )
        if shortfall.uncovered <= shortfall.beyond_cap:
            return
        now = self._clock.monotonic()
        failures = self._limiter.failures_in_window(now)
        paused_until = self._limiter.paused_until(now)
        in_flight = self._count_in(*_COMING)
        if paused_until is not None:
            yield explain.starts_paused_reason(
                failures=failures, limit=self._limiter.limit, resumes_in=paused_until - now
            )
        elif self._limiter.creation_allowance(now=now, in_flight=in_flight) == 0:
            yield explain.starts_limited_reason(failures=failures, limit=self._limiter.limit)

    def _problems_of_coming_pods(self) -> list[ProblemView]:
        ordered = sorted(self._taskmanagers.values(), key=lambda tm: tm.order)
        problems = [tm.problem for tm in ordered if tm.is_coming and tm.problem is not None]
        last_failure = self._last_create_failure
        recent = self._clock.monotonic() - self._last_create_failure_at < _FAILURE_WINDOW
        if last_failure is not None and recent:
            problems.append(last_failure)
        return problems
