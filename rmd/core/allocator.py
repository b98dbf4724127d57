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

After a restart, :meth:`Allocator.restore` brings back the stored jobs and :meth:`adopt` the
live pods; TaskManagers adopted that way get their slots' jobs back when they register again,
and count as supply during the recovery window (:mod:`rmd.core.recovery`).

TaskManager life cycle: requested → pending → registered → releasing → gone. A TaskManager
with allocated slots is never released or cancelled by a decision of this class; when one is
lost, its slots go back to their jobs' demand and a replacement is requested.

This class decides how supply follows demand. What each event means for one TaskManager is
decided by :mod:`rmd.core.podtracker` (the pod's events) and :mod:`rmd.core.lifecycle` (the
agent's events, timeouts, and the transitions between states). The records and the index of
TaskManagers are :mod:`rmd.core.records`, slot placement :mod:`rmd.core.placement`, the slot
cap's arithmetic :mod:`rmd.core.slotcap`, and everything shown to the outside
:mod:`rmd.core.views`.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence

from rmd.core import placement
from rmd.core.allocator_settings import AllocatorSettings
from rmd.core.clock import Clock
from rmd.core.deadlines import DeadlineQueue, Timer
from rmd.core.lifecycle import TaskManagerLifecycle
from rmd.core.model import (
    Action,
    DeletePod,
    JobSummary,
    JobView,
    PodObservation,
    RecoveryCompleted,
    ReleaseReason,
    StatusView,
    TaskManagerState,
    TaskManagerView,
    UnknownJob,
    UnknownTaskManager,
)
from rmd.core.naming import parse_taskmanager_pod_name
from rmd.core.podtracker import PodTracker
from rmd.core.records import COMING, LIVE, JobRecord, TaskManagerIndex, TaskManagerRecord
from rmd.core.recovery import Recovery, StateSnapshot, job_state
from rmd.core.views import AllocatorViews, taskmanager_view

__all__ = ["Allocator", "AllocatorSettings"]


class Allocator:
    def __init__(
        self,
        settings: AllocatorSettings,
        *,
        clock: Clock,
        attempt: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._cap = settings.slot_cap
        self._clock = clock
        self._taskmanagers = TaskManagerIndex()
        self._jobs: dict[str, JobRecord] = {}  # insertion order = first declaration (FIFO)
        self._timers = DeadlineQueue()
        self._incarnations = itertools.count(1)  # of job records: see JobRecord.version
        self._lifecycle = TaskManagerLifecycle(
            settings, clock=clock, taskmanagers=self._taskmanagers, jobs=self._jobs
        )
        self._pods = PodTracker(
            settings,
            clock=clock,
            attempt=attempt,
            taskmanagers=self._taskmanagers,
            lifecycle=self._lifecycle,
            rng=rng or random.Random(),
        )
        self._recovery = Recovery(recovery_timeout=settings.recovery_timeout)
        # The stored state (state_snapshot) as last built, its generation, and the marks it
        # was built at: see state_generation.
        self._stored = StateSnapshot()
        self._stored_generation = 0
        self._stored_marks: tuple[object, ...] | None = None

    # ------------------------------------------------------------------ identity

    @property
    def attempt(self) -> int:
        return self._pods.attempt

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

    def declare(self, job_id: str, slots: int, *, origin: str | None = None) -> list[Action]:
        """The job's TOTAL requirement now; the same number again changes nothing.
        ``origin``: who declares it when not the HTTP API (see :meth:`jobs_declared_by`)."""
        if slots < 0:
            raise ValueError(f"a job requires 0 or more slots (got {slots})")
        out: list[Action] = []
        job = self._jobs.get(job_id)
        if job is None:
            job = self._jobs[job_id] = JobRecord(
                job_id=job_id, incarnation=next(self._incarnations)
            )
        if origin is not None:
            job.origin = origin
        job.set_required(slots, now=self._clock.monotonic())
        self._free_job_slots(
            job, count=job.allocated - slots, reason="requirement lowered", out=out
        )
        self._reconcile(out)
        return self._done(out)

    def jobs_declared_by(self, origin: str) -> dict[str, int]:
        """The jobs declared with ``origin`` (restored ones included): id -> slots."""
        return {job.job_id: job.required for job in self._jobs.values() if job.origin == origin}

    def remove_job(self, job_id: str) -> list[Action]:
        job = self._job(job_id)
        out: list[Action] = []
        job.set_required(0, now=self._clock.monotonic())
        self._free_job_slots(job, count=job.allocated, reason="job removed", out=out)
        del self._jobs[job_id]
        self._reconcile(out)
        return self._done(out)

    # ------------------------------------------------------------------ TaskManager side

    def register(self, taskmanager_id: str, *, address: str, slots: int) -> list[Action]:
        if slots < 1:
            raise ValueError(f"a TaskManager offers 1 or more slots (got {slots})")
        out: list[Action] = []
        tm = self._taskmanagers.get(taskmanager_id)
        recovered = tm is not None and tm.adopted
        if self._lifecycle.register(taskmanager_id, address=address, slots=slots, out=out):
            if recovered and tm is not None:
                self._restore_slots(tm, out)
            self._reconcile(out)
        return self._done(out)

    def heartbeat(self, taskmanager_id: str) -> list[Action]:
        self._lifecycle.heartbeat(taskmanager_id)
        return []

    def resume_after_stall(self) -> int:
        """Call when the daemon finds it stood still past its own deadlines (before ``tick``):
        registered TaskManagers get a fresh heartbeat timeout instead of being declared lost
        for heartbeats the daemon could not read. Returns how many were given one."""
        return self._lifecycle.forgive_stall()

    def deregister(self, taskmanager_id: str) -> list[Action]:
        out: list[Action] = []
        if self._lifecycle.deregister(taskmanager_id, out):
            self._reconcile(out)
        return self._done(out)

    # ------------------------------------------------------------------ external usage

    def observe_external_usage(self, busy: Mapping[str, bool]) -> list[Action]:
        """A full report of the external usage source: TaskManager id -> busy.

        Only with ``external_usage_gate``. A registered TaskManager's release timer runs from
        the later of "no slot allocated here" and "reported idle without a break since"; a
        busy report stops it, and a TaskManager missing from the report counts as unknown (no
        timer). Ids the allocator does not know are ignored.
        """
        self._require_gate()
        self._lifecycle.observe_external_usage(busy)
        out: list[Action] = []
        self._reconcile(out)
        return self._done(out)

    def external_usage_unknown(self) -> list[Action]:
        """The external usage source cannot be read: every release timer stops until it
        reports again (and then starts from that report)."""
        self._require_gate()
        self._lifecycle.external_usage_unknown()
        return []

    def _require_gate(self) -> None:
        if not self._settings.external_usage_gate:
            raise RuntimeError("external usage reports need AllocatorSettings.external_usage_gate")

    # ------------------------------------------------------------------ Kubernetes side

    def create_succeeded(self, name: str) -> list[Action]:
        out: list[Action] = []
        if self._pods.create_succeeded(name, out):
            self._reconcile(out)
        return self._done(out)

    def create_failed(
        self, name: str, *, reason: str, message: str, api_unavailable: bool = False
    ) -> list[Action]:
        """The pod create failed. ``api_unavailable``: the API server could not be reached
        (a connection error, 429, 5xx) or refused the daemon (401, 403: RBAC, an exhausted
        ResourceQuota): then the pod is not at fault, no start failure is
        counted, and the same create is sent again after a backoff (see ``next_deadline``);
        otherwise the TaskManager failed to start and a new one is requested."""
        out: list[Action] = []
        failed = self._pods.create_failed(
            name, reason=reason, message=message, api_unavailable=api_unavailable, out=out
        )
        if failed:
            self._reconcile(out)
        return self._done(out)

    def pod_observed(self, pod: PodObservation) -> list[Action]:
        out: list[Action] = []
        self._pods.pod_observed(pod, out)
        self._reconcile(out)
        return self._done(out)

    def pod_deleted(self, name: str) -> list[Action]:
        out: list[Action] = []
        if self._pods.pod_deleted(name, out):
            self._reconcile(out)
        return self._done(out)

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
        out: list[Action] = []
        self._pods.resync(pods, listed_at=listed_at, out=out)
        self._reconcile(out)
        return self._done(out)

    def restore(self, state: StateSnapshot) -> None:
        """Start-up recovery, before :meth:`adopt`: the jobs of the stored state come back
        with their declared slots (waiting from now, in their old order), and the slots they
        held are reserved on those TaskManagers until they register again."""
        if self._jobs or len(self._taskmanagers) or self._recovery.started_at is not None:
            raise RuntimeError("bug: restore() comes first, on a fresh allocator")
        now = self._clock.monotonic()
        for job in state.jobs:
            record = self._jobs[job.job_id] = JobRecord(
                job_id=job.job_id, origin=job.origin, incarnation=next(self._incarnations)
            )
            record.set_required(job.slots, now=now)
        self._recovery.expect(state)

    def adopt(self, pods: Sequence[PodObservation]) -> list[Action]:
        """Start-up recovery: keep the live pods of earlier attempts, delete the dead ones.

        Adopted pods wait for their TaskManagers to register (registration timer from now);
        they are never cancelled, and count as supply only during the recovery window
        (``recovery_timeout`` from now, until each has registered). When one registers, the
        slots it held (see :meth:`restore`) go back to their jobs. New pods use attempt =
        highest attempt found + 1.
        """
        out: list[Action] = []
        self._pods.adopt(pods, out)
        self._recovery.start(
            now=self._clock.monotonic(),
            adopted=[tm.name for tm in self._recovering()],
            deleted=sum(1 for action in out if isinstance(action, DeletePod)),
        )
        self._reconcile(out)
        return self._done(out)

    def state_generation(self) -> int:
        """A number that changes exactly when :meth:`state_snapshot` does (it only grows).

        The stored state changes only with a job's requirement, slots or origin (its
        ``version``), a job declared or removed, a TaskManager's state (which also covers its
        idle time: that starts and ends with a registration, a slot or a release), or the
        recovery's reservations. While none of those marks moved, the last snapshot still
        holds and nothing is built: a heartbeat, or a pod event that changes nothing (the
        answer to a label patch), costs O(jobs) here, not O(slots). When they did move, the
        snapshot is built again and the generation moves only if it differs.
        """
        marks = self._marks()
        if marks != self._stored_marks:
            snapshot = self._build_snapshot()
            self._stored_marks = marks
            if snapshot != self._stored:
                self._stored = snapshot
                self._stored_generation += 1
        return self._stored_generation

    def _marks(self) -> tuple[object, ...]:
        recovery = self._recovery
        jobs = tuple((job.job_id, job.version, job.origin) for job in self._jobs.values())
        return (jobs, self._taskmanagers.moves, len(recovery.reserved), len(recovery.idle_since))

    def state_snapshot(self) -> StateSnapshot:
        """What survives a restart: every job's declared slots and the slots it holds (or
        held before a restart, on TaskManagers that have not registered again yet), and
        since when each idle TaskManager has been idle (the same for those not registered
        again yet). Built again only when :meth:`state_generation` finds a reason."""
        self.state_generation()
        return self._stored

    def _build_snapshot(self) -> StateSnapshot:
        reserved: dict[str, dict[str, list[int]]] = {}
        for tm in self._recovering():
            for index, job_id in self._recovery.reserved.get(tm.name, {}).items():
                reserved.setdefault(job_id, {}).setdefault(tm.name, []).append(index)
        jobs = []
        for job in self._jobs.values():
            held: dict[str, list[int]] = {name: list(ix) for name, ix in job.slots.items()}
            for name, indices in reserved.get(job.job_id, {}).items():
                held.setdefault(name, []).extend(indices)
            jobs.append(job_state(job.job_id, job.required, held, origin=job.origin))
        idle = {
            tm.name: int(tm.idle_since_wall)
            for tm in self._taskmanagers.in_states(TaskManagerState.REGISTERED)
            if tm.idle_since_wall is not None
        }
        for tm in self._recovering():  # idle before a restart, not registered again yet
            since = self._recovery.idle_since.get(tm.name)
            if since is not None:
                idle[tm.name] = since
        return StateSnapshot(jobs=tuple(jobs), idle=tuple(sorted(idle.items())))

    # ------------------------------------------------------------------ time

    def tick(self) -> list[Action]:
        """Fire every timer due at ``clock.monotonic()``; touches only what is due (with
        nothing due and no start limit in force, it does nothing at all)."""
        out: list[Action] = []
        now = self._clock.monotonic()
        due = self._pop_due(now)
        for tm, timer in sorted(due, key=lambda item: item[0].order):
            if tm.name not in self._taskmanagers or timer is Timer.IDLE_RELEASE:
                continue  # gone with an earlier timer; idle releases are decided below
            at = self._lifecycle.deadline(tm, timer)
            if at is None or at > now:
                continue  # an earlier timer changed it
            if timer is Timer.CREATE_RETRY:
                self._pods.send_create_again(tm, out)
            else:
                self._lifecycle.fire_timeout(tm, timer, out)
        window_ends = self._recovery.window_ends
        if (
            due
            or self._lifecycle.limiter.engaged
            or (window_ends is not None and window_ends <= now)
        ):
            self._reconcile(out)
        return self._done(out)

    def next_deadline(self) -> float | None:
        """Monotonic time of the next timer (idle release, registration or heartbeat
        timeout, end of a start pause, a create to send again); None when nothing is
        scheduled. O(1) but for stale entries dropped on the way (each once)."""
        now = self._clock.monotonic()
        while (first := self._timers.first()) is not None:
            at, name, timer = first
            tm = self._taskmanagers.get(name)
            true_at = None if tm is None else self._lifecycle.deadline(tm, timer)
            if true_at == at:
                break
            self._timers.pop()  # moved later (a heartbeat) or stopped: arm it where it is
            self._timers.arm(name, timer, true_at)
        others = [self._lifecycle.limiter.next_deadline(now), self._recovery.window_ends]
        return min(
            (at for at in (None if first is None else first[0], *others) if at is not None),
            default=None,
        )

    def _pop_due(self, now: float) -> list[tuple[TaskManagerRecord, Timer]]:
        """Take the timers due at ``now`` off the queue; entries whose deadline moved later
        are armed again where it is now, stopped ones dropped."""
        due: list[tuple[TaskManagerRecord, Timer]] = []
        while (first := self._timers.first()) is not None and first[0] <= now:
            _, name, timer = first
            self._timers.pop()
            tm = self._taskmanagers.get(name)
            true_at = None if tm is None else self._lifecycle.deadline(tm, timer)
            if tm is None or true_at is None:
                continue
            if true_at > now:
                self._timers.arm(name, timer, true_at)
            else:
                due.append((tm, timer))
        return due

    def _done(self, out: list[Action]) -> list[Action]:
        """After every event: arm the timers of the TaskManagers it touched."""
        for tm in self._taskmanagers.take_touched():
            for timer in (Timer.REGISTRATION, Timer.HEARTBEAT, Timer.CREATE_RETRY):
                self._timers.arm(tm.name, timer, self._lifecycle.deadline(tm, timer))
        return out

    # ------------------------------------------------------------------ views

    def job_view(self, job_id: str) -> JobView:
        return self._views().job_view(self._job(job_id))

    def job_summary(self, job_id: str) -> JobSummary:
        """The job without its slot list (cheap at any size: O(1) once fulfilled)."""
        return self._views().job_summary(self._job(job_id))

    def job_fulfilled(self, job_id: str) -> bool:
        """Whether the job holds every slot it requires; O(1) (a long poll asks it after every
        event, where :meth:`job_summary` of a waiting job would explain why it waits)."""
        job = self._job(job_id)
        return job.allocated >= job.required

    def job_version(self, job_id: str) -> str | None:
        """Changes whenever the job's requirement or slots change; None for an unknown job.
        O(1): long polls compare it after every event."""
        job = self._jobs.get(job_id)
        return None if job is None else job.version

    def job_views(self) -> list[JobView]:
        return self._views().job_views()

    def jobs_waiting(self) -> list[str]:
        """Jobs with demand not yet met, oldest declaration first (cheap: builds no views)."""
        return [job.job_id for job in self._jobs.values() if job.unmet]

    def taskmanager_view(self, taskmanager_id: str) -> TaskManagerView:
        tm = self._taskmanagers.get(taskmanager_id)
        if tm is None:
            raise UnknownTaskManager(
                f"TaskManager {taskmanager_id!r} is not known to this resource manager"
            )
        return taskmanager_view(tm, clock=self._clock)

    def taskmanager_views(self) -> list[TaskManagerView]:
        return self._views().taskmanager_views()

    def status(self) -> StatusView:
        return self._views().status()

    def _views(self) -> AllocatorViews:
        return AllocatorViews(
            taskmanagers=self._taskmanagers,
            jobs=self._jobs,
            limiter=self._lifecycle.limiter,
            cap=self._cap,
            clock=self._clock,
            orphans_deleting=self._pods.orphans_deleting,
            recent_create_failure=self._pods.recent_create_failure(),
            create_unanswered_after=self._settings.create_unanswered_after,
        )

    # ================================================================== decisions

    def _job(self, job_id: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"job {job_id!r} is not known: declare its requirements first")
        return job

    def _free_job_slots(
        self, job: JobRecord, *, count: int, reason: str, out: list[Action]
    ) -> None:
        """Free ``count`` of the job's slots (nothing when ``count`` is not positive)."""
        freed = placement.free_job_slots(
            job,
            self._taskmanagers,
            count=count,
            reason=reason,
            now=self._clock.monotonic(),
            wall=self._clock.wall(),
        )
        if freed is not None:
            out.append(freed)

    def _capped_unmet(self) -> int:
        """Unmet demand that the slot cap allows to be served."""
        unmet = sum(job.unmet for job in self._jobs.values())
        allocated = sum(job.allocated for job in self._jobs.values())
        return self._cap.slots_allowed(unmet, in_use=allocated)

    def _spare_slots(self) -> int:
        """Free slots to keep as warm spares: only while some job runs or waits."""
        if not any(job.required for job in self._jobs.values()):
            return 0
        return self._settings.redundant_taskmanagers * self._settings.slots_per_taskmanager

    # ------------------------------------------------------------------ recovery

    def _recovering(self) -> list[TaskManagerRecord]:
        """TaskManagers adopted at start-up that have not registered again (yet)."""
        return [tm for tm in self._taskmanagers.in_states(*COMING) if tm.adopted]

    def _restore_slots(self, tm: TaskManagerRecord, out: list[Action]) -> None:
        self._recovery.reregistered += 1
        held, idle_since = self._recovery.take(tm.name)
        now, wall = self._clock.monotonic(), self._clock.wall()
        if held:
            out.extend(placement.restore_slots(tm, self._jobs, held, now=now, wall=wall))
        if idle_since is not None and tm.idle_since is not None:
            # Idle before the restart too: its idle timeout runs on from then, not afresh
            # (a daemon restarting in a loop would otherwise keep idle pods forever).
            since_wall = min(float(idle_since), wall)
            tm.idle_since = now - (wall - since_wall)
            tm.idle_since_wall = since_wall

    def _note_recovery(self, now: float, out: list[Action]) -> list[TaskManagerRecord]:
        """The adopted TaskManagers that count as supply now (the window is open); closes the
        window when it has passed and reports the recovery once nobody is left to wait for."""
        recovery = self._recovery
        if recovery.started_at is None or recovery.completed:
            return []
        recovering = self._recovering()
        if recovering and recovery.window_open(now=now):
            return recovering
        recovery.window_ends = None
        if not recovering:
            recovery.completed = True
            out.append(RecoveryCompleted(recovery.figures(), seconds=now - recovery.started_at))
        return []

    def _held_back(self, recovering: Sequence[TaskManagerRecord]) -> dict[str, int]:
        """Per job, waiting demand reserved on TaskManagers that are registering again."""
        held: dict[str, int] = {}
        for tm in recovering:
            for job_id in self._recovery.reserved.get(tm.name, {}).values():
                held[job_id] = held.get(job_id, 0) + 1
        return held

    # ------------------------------------------------------------------ reconciliation

    def _reconcile(self, out: list[Action]) -> None:
        now = self._clock.monotonic()
        recovering = self._note_recovery(now, out)
        out.extend(
            placement.allocate_waiting(
                self._jobs.values(),
                self._taskmanagers.in_states(TaskManagerState.REGISTERED),
                capacity=self._capped_unmet(),
                now=now,
                wall=self._clock.wall(),
                held_back=self._held_back(recovering),
            )
        )
        unmet = self._capped_unmet()
        target = unmet + self._spare_slots()
        # One walk over the registered TaskManagers (it runs after every event): their free
        # slots, and the idle ones. Idle TaskManagers past their timeout go, unless demand or
        # the spares need them; every change of idleness comes with a reconciliation, so the
        # idle timers are armed here.
        free_registered = 0
        idle_due: list[TaskManagerRecord] = []
        for tm in self._taskmanagers.in_states(TaskManagerState.REGISTERED):
            free_registered += len(tm.slot_jobs) - tm.allocated
            if tm.idle_since is None:
                continue  # busy: no idle timer
            release_at = self._lifecycle.idle_release_at(tm)
            if release_at is None:
                continue
            if release_at <= now:
                idle_due.append(tm)
            elif not tm.idle_checked:
                self._timers.arm(tm.name, Timer.IDLE_RELEASE, release_at)
        idle_due.sort(key=lambda tm: (tm.idle_since or 0.0, tm.order))
        for tm in idle_due:
            if free_registered - tm.free >= target:
                free_registered -= tm.free
                self._lifecycle.release(tm, ReleaseReason.IDLE, out)
            else:
                tm.idle_checked = True

        # Pods on their way that demand no longer needs are cancelled. Each was created for
        # slots_per_taskmanager slots. Adopted pods are never cancelled; during the recovery
        # window they are supply.
        coming = [tm for tm in self._taskmanagers.in_states(*COMING) if not tm.adopted]
        per_taskmanager = self._settings.slots_per_taskmanager
        supply = (
            free_registered
            + len(coming) * per_taskmanager
            + sum(tm.slots_total for tm in recovering)
        )
        if coming and supply - per_taskmanager >= target:
            coming.sort(key=lambda tm: tm.order, reverse=True)  # newest first ...
            coming.sort(key=lambda tm: tm.is_scheduled)  # ... unscheduled before scheduled
            for tm in coming:
                if supply - tm.slots_total >= target:
                    supply -= tm.slots_total
                    self._lifecycle.release(tm, ReleaseReason.EXCESS, out)

        # Create what is missing; spares only once nothing is waiting to register.
        if supply < unmet:
            shortfall = unmet - supply
        elif supply < target and not self._taskmanagers.count(*COMING):
            shortfall = target - supply
        else:
            return
        self._create_pods(math.ceil(shortfall / self._settings.slots_per_taskmanager), now, out)

    def _create_pods(self, wanted: int, now: float, out: list[Action]) -> None:
        settings = self._settings
        live_slots = sum(tm.slots_total for tm in self._taskmanagers.in_states(*LIVE))
        wanted = self._cap.taskmanagers_allowed(wanted, slots_in_use=live_slots)
        if settings.max_pending_creates is not None:
            requested = self._taskmanagers.count(TaskManagerState.REQUESTED)
            wanted = min(wanted, max(0, settings.max_pending_creates - requested))
        in_flight = self._taskmanagers.count(*COMING)
        allowance = self._lifecycle.limiter.creation_allowance(now=now, in_flight=in_flight)
        if allowance is not None:
            wanted = min(wanted, allowance)
        for _ in range(wanted):
            self._pods.start(out)
