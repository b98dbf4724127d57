"""What happens to each TaskManager: the life cycle requested → pending → registered →
releasing → gone, and the transitions between its states.

:class:`TaskManagerLifecycle` takes the agent's events (registration, heartbeats, goodbye)
and the timeouts, and carries out the transitions that the allocator and the
:class:`~rmd.core.podtracker.PodTracker` decide: release a TaskManager (delete its pod), lose
one (its slots back to demand, a start failure if it never registered). It owns the
start-failure rate limit and the idle timer: with ``external_usage_gate`` that timer also
waits for the external usage source (Flink's view of which TaskManagers are idle) to report
a TaskManager idle. It never decides how many TaskManagers there should be: that is
:class:`rmd.core.allocator.Allocator`'s reconciliation, which runs after every event method
here that returns True (something changed).

Every method that takes ``out`` appends the actions it takes to it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from rmd.core import placement
from rmd.core.allocator_settings import AllocatorSettings
from rmd.core.clock import Clock, wall_time
from rmd.core.deadlines import Timer
from rmd.core.model import (
    Action,
    DeletePod,
    LossReason,
    RegistrationRefused,
    ReleaseReason,
    SlotCountMismatch,
    StartFailure,
    StartsThrottled,
    TaskManagerLost,
    TaskManagerRegistered,
    TaskManagerState,
    UnknownTaskManager,
)
from rmd.core.ratelimit import StartFailureLimiter
from rmd.core.records import JobRecord, TaskManagerIndex, TaskManagerRecord

FAILURE_WINDOW = 60.0  # the start-failure rate limit counts over this trailing window (s)


class PodFate(enum.Enum):
    """What becomes of the pod of a lost TaskManager, unless the daemon deletes it (then a
    :class:`ReleaseReason` says why)."""

    GONE = "gone"  # the pod no longer exists: the TaskManager is forgotten
    BEING_DELETED = "being deleted"  # someone else deletes it: releasing until it is gone


class TaskManagerLifecycle:
    def __init__(
        self,
        settings: AllocatorSettings,
        *,
        clock: Clock,
        taskmanagers: TaskManagerIndex,
        jobs: Mapping[str, JobRecord],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._taskmanagers = taskmanagers
        self._jobs = jobs  # a lost TaskManager's slots go back to these jobs' demand
        self.limiter = StartFailureLimiter(
            max_failures_per_minute=settings.max_start_failures_per_minute,
            retry_interval=settings.start_retry_interval,
            window=FAILURE_WINDOW,
        )

    # ------------------------------------------------------------------ the agent

    def register(self, taskmanager_id: str, *, address: str, slots: int, out: list[Action]) -> bool:
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
        if slots > tm.slots_total or (tm.is_registered and slots != tm.slots_total):
            # The pod was sized (and the slot cap counted) for tm.slots_total: more slots, or
            # another count than it registered with, would break both. Fewer on a first
            # registration is taken (the TaskManager offers what it has).
            raise SlotCountMismatch(
                f"TaskManager {taskmanager_id!r} offers {slots} slots but "
                + (
                    f"registered with {tm.slots_total}: send {tm.slots_total}"
                    if tm.is_registered
                    else f"its pod was created for {tm.slots_total} "
                    f"(taskmanager.numberOfTaskSlots): send at most {tm.slots_total}"
                )
            )
        now = self._clock.monotonic()
        tm.confirm(now=now)  # its agent runs: the pod exists
        if tm.address != address:  # the jobs' slot lists show the address
            for job_id in {job_id for job_id in tm.slot_jobs if job_id is not None}:
                self._jobs[job_id].changes += 1
        tm.address = address
        tm.last_heartbeat = now
        self._taskmanagers.touch(tm)  # its registration and heartbeat timers change
        if tm.is_registered:
            return False
        tm.slots_total = slots
        tm.slot_jobs = [None] * slots
        tm.allocated = 0
        tm.problem = None
        recovered, tm.adopted = tm.adopted, False
        out.append(
            self._taskmanagers.set_state(tm, TaskManagerState.REGISTERED, reason="registered")
        )
        out.append(
            TaskManagerRegistered(
                taskmanager_id, startup_seconds=now - tm.created_at, recovered=recovered
            )
        )
        self.limiter.record_success()
        tm.refresh_idle(now=now, wall=self._clock.wall())
        return True

    def heartbeat(self, taskmanager_id: str) -> None:
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

    def forgive_stall(self) -> int:
        """The daemon itself stood still (its process stopped, its loop blocked): heartbeats
        may be waiting unread in its sockets, so no TaskManager is judged by the time that
        passed — each registered one's heartbeat clock starts again now. Returns how many."""
        now = self._clock.monotonic()
        forgiven = 0
        for tm in self._taskmanagers.in_states(TaskManagerState.REGISTERED):
            if tm.last_heartbeat is not None and tm.last_heartbeat < now:
                tm.last_heartbeat = now
                forgiven += 1
        return forgiven

    def deregister(self, taskmanager_id: str, out: list[Action]) -> bool:
        tm = self._taskmanagers.get(taskmanager_id)
        if tm is None:
            raise UnknownTaskManager(
                f"TaskManager {taskmanager_id!r} is not known to this resource manager"
            )
        if tm.state is TaskManagerState.RELEASING:
            return False
        tm.confirm(now=self._clock.monotonic())  # its agent runs: the pod exists
        if not tm.is_registered:  # gave up before it ever served: a failed start
            self._start_failure(tm.name, "TaskManager said goodbye before registering", out)
        self._free_slots(tm, reason=f"TaskManager {tm.name} deregistered", out=out)
        self.release(tm, ReleaseReason.DEREGISTERED, out)
        return True

    # ------------------------------------------------------------------ external usage

    def observe_external_usage(self, busy: Mapping[str, bool]) -> None:
        """A full report of the external usage source: TaskManager id -> busy. A registered
        TaskManager reported idle keeps the time of the first such report in a row; a busy
        report, or no word on it, stops its idle timer. Ids not registered here are ignored."""
        now = self._clock.monotonic()
        for tm in self._taskmanagers.in_states(TaskManagerState.REGISTERED):
            if busy.get(tm.name, True):
                tm.set_externally_idle(None)
            elif tm.externally_idle_since is None:
                tm.set_externally_idle(now)

    def external_usage_unknown(self) -> None:
        """The external usage source cannot be read: every idle timer stops until it reports
        again (and then starts from that report)."""
        for tm in self._taskmanagers.in_states(TaskManagerState.REGISTERED):
            tm.set_externally_idle(None)

    def idle_release_at(self, tm: TaskManagerRecord) -> float | None:
        """When an idle TaskManager may be released: ``idle_timeout`` after it became idle to
        rmd or, with ``external_usage_gate``, after the later of that and the first of the
        external source's unbroken idle reports. None while it is not idle (to either)."""
        if tm.idle_since is None:
            return None
        start = tm.idle_since
        if self._settings.external_usage_gate:
            if tm.externally_idle_since is None:
                return None
            start = max(start, tm.externally_idle_since)
        return start + self._settings.idle_timeout

    # ------------------------------------------------------------------ time

    def deadline(self, tm: TaskManagerRecord, timer: Timer) -> float | None:
        """The true deadline of one of ``tm``'s timers now (monotonic), None when it does
        not run. The allocator's :class:`~rmd.core.deadlines.DeadlineQueue` holds an entry at
        or before it and asks again when that entry comes first."""
        settings = self._settings
        match timer:
            case Timer.REGISTRATION:
                # No pod yet while a create waits to be sent again: the timer starts then.
                if tm.is_coming and not tm.awaits_create_retry:
                    return tm.created_at + settings.registration_timeout
            case Timer.HEARTBEAT:
                if tm.is_registered and tm.last_heartbeat is not None:
                    return tm.last_heartbeat + settings.heartbeat_timeout
            case Timer.IDLE_RELEASE:
                if tm.is_registered and not tm.idle_checked:
                    return self.idle_release_at(tm)
            case Timer.CREATE_RETRY:
                if tm.state is TaskManagerState.REQUESTED and tm.create_retry is not None:
                    # Not before a start pause ends.
                    paused_until = self.limiter.paused_until(self._clock.monotonic())
                    if paused_until is None:
                        return tm.create_retry.at
                    return max(tm.create_retry.at, paused_until)
        return None

    def fire_timeout(self, tm: TaskManagerRecord, timer: Timer, out: list[Action]) -> None:
        """A registration or heartbeat timeout is due: the TaskManager is lost."""
        settings = self._settings
        if timer is Timer.REGISTRATION:
            waiting_for = f" ({tm.problem.reason}: {tm.problem.message})" if tm.problem else ""
            self.lose(
                tm,
                LossReason.REGISTRATION_TIMEOUT,
                start_failure=(
                    f"not registered within {settings.registration_timeout:g} s{waiting_for}"
                ),
                pod=ReleaseReason.REGISTRATION_TIMEOUT,
                out=out,
            )
        elif timer is Timer.HEARTBEAT:
            self.lose(
                tm,
                LossReason.HEARTBEAT_TIMEOUT,
                start_failure=f"no heartbeat for {settings.heartbeat_timeout:g} s",
                pod=ReleaseReason.HEARTBEAT_TIMEOUT,
                out=out,
            )
        else:
            raise ValueError(f"bug: {timer} is no timeout")

    # ------------------------------------------------------------------ transitions

    def release(self, tm: TaskManagerRecord, reason: ReleaseReason, out: list[Action]) -> None:
        """Delete the pod (once its create has landed), or just forget the TaskManager when its
        create waits to be sent again. Its slots must be free."""
        if tm.allocated:
            raise RuntimeError(f"bug: releasing {tm.name} with {tm.allocated} allocated slots")
        tm.stop_idling()
        if tm.awaits_create_retry:  # no create in flight, no pod known: nothing to delete
            out.append(self._taskmanagers.forget(tm, reason=reason.value))
            return
        was_requested = tm.state is TaskManagerState.REQUESTED and tm.confirmed_at is None
        out.append(
            self._taskmanagers.set_state(tm, TaskManagerState.RELEASING, reason=reason.value)
        )
        tm.release_reason = reason
        if was_requested:
            tm.delete_when_created = reason  # sent once the create lands (or dropped if it fails)
        else:
            out.append(DeletePod(tm.name, reason))

    def lose(
        self,
        tm: TaskManagerRecord,
        loss: LossReason,
        *,
        start_failure: str | None,
        pod: ReleaseReason | PodFate,
        out: list[Action],
    ) -> None:
        """The TaskManager went away without the daemon asking (or is given up): its slots go
        back to demand, and its pod is deleted for the ``pod`` reason given, or forgotten when
        gone, or left to whoever is deleting it (then the TaskManager is lost at once, whatever
        the pod's grace period, and stays releasing until the pod is gone, neither supply nor
        deleted a second time).

        ``start_failure`` says what went wrong when a TaskManager that never registered counts
        as a failed start; None when the loss is not the TaskManager's doing (its pod was
        deleted: by a user, an eviction, or the daemon itself).
        """
        was_registered = tm.is_registered
        jobs = self._free_slots(tm, reason=f"TaskManager {tm.name} lost: {loss.value}", out=out)
        out.append(TaskManagerLost(tm.name, loss, was_registered, jobs))
        if not was_registered and start_failure is not None:
            self._start_failure(tm.name, start_failure, out)
        if pod is PodFate.GONE:
            out.append(self._taskmanagers.forget(tm, reason=loss.value))
        elif pod is PodFate.BEING_DELETED:
            tm.stop_idling()
            out.append(
                self._taskmanagers.set_state(
                    tm, TaskManagerState.RELEASING, reason="pod being deleted"
                )
            )
        else:
            self.release(tm, pod, out)

    def pod_gone(self, tm: TaskManagerRecord, loss: LossReason, out: list[Action]) -> None:
        """The pod no longer exists (a DELETED event, or absent from a LIST): someone deleted
        it, which is never a failed start."""
        if tm.state is TaskManagerState.RELEASING:
            out.append(self._taskmanagers.forget(tm, reason="pod deleted"))
            return
        self.lose(tm, loss, start_failure=None, pod=PodFate.GONE, out=out)

    def _start_failure(self, name: str, detail: str, out: list[Action]) -> None:
        now = self._clock.monotonic()
        out.append(StartFailure(name, detail))
        paused_until = self.limiter.record_failure(now)
        if paused_until is not None:
            out.append(
                StartsThrottled(
                    failures_in_window=self.limiter.failures_in_window(now),
                    until=wall_time(self._clock, paused_until),
                )
            )

    def _free_slots(
        self, tm: TaskManagerRecord, *, reason: str, out: list[Action]
    ) -> tuple[str, ...]:
        """Free every slot of ``tm``; the demand goes back to the jobs. The jobs affected."""
        freed = placement.free_taskmanager_slots(
            tm, self._jobs, reason=reason, now=self._clock.monotonic(), wall=self._clock.wall()
        )
        out.extend(freed)
        return tuple(sorted(notice.job_id for notice in freed))

    def send_deferred_delete(self, tm: TaskManagerRecord, out: list[Action]) -> None:
        if tm.delete_when_created is not None:
            out.append(DeletePod(tm.name, tm.delete_when_created))
            tm.delete_when_created = None
