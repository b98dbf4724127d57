"""The driver of the pure allocator in the running daemon (:class:`DaemonEngine`): feeds it
events and carries out its actions.

Everything the allocator decides comes back as actions. Effects (create or delete a pod)
run as tasks against the pod gateway, bounded by its concurrency limit, and report their
outcome back into the allocator; notices become log events and metrics, and every batch of
actions goes to the reporter (:mod:`rmd.kube.reporter`: the pods' ``rmd.dev/state`` label and
Kubernetes Events), which never makes allocation wait (a pod delete waits up to 2 s for the
pod's last label, ``releasing``). A timer task fires
the allocator's deadlines (idle release, registration and heartbeat timeouts, the end of a
start-failure pause). All allocator calls happen on the event loop's thread, never
concurrently, and never with an ``await`` between the call and :meth:`apply`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any, Protocol, assert_never

import structlog

from rmd.core.allocator import Allocator
from rmd.core.clock import Clock
from rmd.core.model import (
    Action,
    CreatePod,
    CreateRetryScheduled,
    DeletePod,
    LossReason,
    Notice,
    PodObservation,
    PodProblem,
    RecoveryCompleted,
    SlotsAllocated,
    SlotsFreed,
    StartFailure,
    StartsThrottled,
    TaskManagerChanged,
    TaskManagerLost,
    TaskManagerRegistered,
)
from rmd.core.recovery import StateSnapshot
from rmd.job_waiters import JobWaiters
from rmd.kube.pods import PodApiError
from rmd.retry import Backoff, Failure, Pacing, RetryPolicy, retry

log = structlog.get_logger("rmd.driver")

# A delete that failed (after the gateway's own retries) is tried again until it succeeds,
# with exponential backoff and full jitter; the TaskManager stays "releasing" meanwhile.
DELETE_BACKOFF = Backoff(base=2.0, cap=60.0)
MIN_TIMER_DELAY = 0.005
# Woken this many seconds past a deadline it meant to keep, the daemon stood still itself.
STALL_THRESHOLD = 3.0


class PodBuilder(Protocol):
    def __call__(self, *, pod_name: str) -> dict[str, Any]: ...


class PodOperations(Protocol):
    async def create(self, body: dict[str, Any]) -> str | None: ...  # the pod's uid

    async def delete(self, name: str, *, grace_period_seconds: int | None = None) -> None: ...


class NoticeSink(Protocol):
    def observe(self, notice: Notice) -> None: ...

    def loop_stalled(self, *, seconds: float) -> None: ...

    def pod_created(self) -> None: ...

    def pod_create_failed(self, *, reason: str) -> None: ...

    def pod_deleted(self, *, reason: str) -> None: ...


class ClusterReporter(Protocol):
    """What kubectl shows of rmd (:class:`rmd.kube.reporter.KubeReporter`): never waits on
    the API server, except for a moment before a delete."""

    def prepare_create(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def pod_created(self, name: str, *, uid: str | None) -> None: ...

    def pods_observed(self, pods: Sequence[PodObservation]) -> None: ...

    def actions_applied(self, actions: Sequence[Action]) -> None: ...

    def pod_gone(self, name: str) -> None: ...

    async def before_delete(self, name: str) -> None: ...


class DaemonEngine:
    """Implements :class:`rmd.api.ports.Engine` for the running daemon."""

    def __init__(
        self,
        *,
        allocator: Allocator,
        pods: PodOperations,
        build_pod: PodBuilder,
        metrics: NoticeSink,
        clock: Clock,
        delete_backoff: Backoff = DELETE_BACKOFF,
        pacing: Pacing | None = None,
        owner_exists: Callable[[], Awaitable[bool]] | None = None,
        owner_name: str | None = None,
        reporter: ClusterReporter | None = None,
        on_change: Callable[[], None] | None = None,
        standby: bool = False,
    ) -> None:
        """``standby``: a follower (high availability). It keeps a warm view of the pods from
        the watch (:meth:`warm_view`) but adopts nothing and decides nothing until the
        start-up recovery, run when it becomes the leader, calls :meth:`adopt`."""
        self._allocator = allocator
        self._pods = pods
        self._build_pod = build_pod
        self._metrics = metrics
        self._clock = clock
        self._job_waiters = JobWaiters(allocator.job_version)
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer_wakeup = asyncio.Event()
        # The deadline the timer task sleeps until (None: none, it sleeps until woken); only
        # an event that brings the next deadline before it wakes the timer.
        self._timer_sleeps_until: float | None = None
        self._adopted = False
        self._watch_synced: Callable[[], bool] = lambda: False
        self._closing = False
        self._list_started_at: float | None = None
        self._delete_retry = RetryPolicy(backoff=delete_backoff)
        self._pacing = pacing
        # The JobManager Deployment the pods are owned by: asked after pods are deleted from
        # outside; once it is gone, creates stop (their pods would be garbage-collected at once).
        self._owner_exists = owner_exists
        self._owner_name = owner_name
        self._owner_gone = False
        self._owner_checking = False
        self._reporter = reporter
        # Told after every applied event: the state to keep across restarts may have changed.
        self._on_change = on_change
        self._standby = standby
        # The follower's warm view: the pods by name, None until the first LIST.
        self._warm: dict[str, PodObservation] | None = None

    # ------------------------------------------------------------------ Engine protocol
    @property
    def allocator(self) -> Allocator:
        return self._allocator

    @property
    def ready(self) -> bool:
        if self._standby:  # a follower is ready once its warm view is in sync
            return self._warm is not None and self._watch_synced()
        return self._adopted and self._watch_synced()

    @property
    def standby(self) -> bool:
        return self._standby

    def warm_view(self) -> list[PodObservation] | None:
        """A standby's view of the pods, kept current by the watch; None before its first
        LIST (or once it adopted: it is no standby any more)."""
        return None if self._warm is None else list(self._warm.values())

    def adopt_from_watch(self) -> None:
        """Recovery could not LIST the pods: the watch's view is adopted — the warm view a
        standby has by now, else the watch's next LIST."""
        warm = self.warm_view()
        if warm is not None:
            self.adopt(warm)
        else:
            self._standby = False  # on_snapshot adopts the first LIST

    @property
    def adopted(self) -> bool:
        return self._adopted

    def set_watch_synced_probe(self, probe: Callable[[], bool]) -> None:
        self._watch_synced = probe

    def apply(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, CreatePod):
                self._spawn(self._create(action.name), name=f"create {action.name}")
            elif isinstance(action, DeletePod):
                self._spawn(
                    self._delete(action.name, reason=str(action.reason), resent=action.resent),
                    name=f"delete {action.name}",
                )
            else:
                self._record(action)
        if self._reporter is not None:
            self._reporter.actions_applied(actions)
        self._notify()

    async def wait_for_job(
        self, job_id: str, predicate: Callable[[], bool], *, timeout: float
    ) -> bool:
        return await self._job_waiters.wait(job_id, predicate, timeout=timeout)

    # ------------------------------------------------------------------ Kubernetes events
    def restore(self, state: StateSnapshot) -> None:
        """Start-up recovery (:mod:`rmd.recovery`), before :meth:`adopt`: the stored jobs."""
        self._allocator.restore(state)

    def adopt(self, pods: Sequence[PodObservation]) -> None:
        """Start-up recovery: take over the pods a previous incarnation left. A standby is a
        standby no more: from now on pod events go to the allocator."""
        self._standby = False
        self._warm = None
        if self._reporter is not None:
            self._reporter.pods_observed(pods)
        self.apply(self._allocator.adopt(pods))
        self._adopted = True
        log.info(
            "adopted",
            pods_found=len(pods),
            taskmanagers=sum(1 for v in self._allocator.taskmanager_views()),
            attempt=self._allocator.attempt,
        )

    def on_pod_event(self, kind: str, pod: PodObservation) -> None:
        if self._standby:
            if self._warm is not None and kind == "DELETED":
                self._warm.pop(pod.name, None)
            elif self._warm is not None:
                self._warm[pod.name] = pod
            return
        if self._reporter is not None:
            self._reporter.pods_observed([pod])
        if kind == "DELETED":
            self.apply(self._allocator.pod_deleted(pod.name))
            if self._reporter is not None:
                self._reporter.pod_gone(pod.name)
        else:
            self.apply(self._allocator.pod_observed(pod))

    def on_list_started(self) -> None:
        """A full LIST is being sent: pods confirmed after now may be missing from it."""
        self._list_started_at = self._clock.monotonic()

    def on_snapshot(self, pods: list[PodObservation]) -> None:
        if self._standby:
            self._warm = {pod.name: pod for pod in pods}
            self._notify()
            return
        if not self._adopted:
            self.adopt(pods)
        else:
            if self._reporter is not None:
                self._reporter.pods_observed(pods)
            self.apply(self._allocator.resync(pods, listed_at=self._list_started_at))

    # ------------------------------------------------------------------ timers
    async def run_timers(self) -> None:
        """Fire the allocator's deadlines; wakes early whenever state changes.

        If the loop wakes more than :data:`STALL_THRESHOLD` seconds after a deadline it meant
        to keep, the daemon itself stood still (SIGSTOP, a blocked loop, a paused VM): before
        judging anyone, registered TaskManagers get a fresh heartbeat timeout — their
        heartbeats may be queued unread in the daemon's sockets."""
        while True:
            self.apply(self._allocator.tick())
            self._timer_wakeup.clear()
            deadline = self._timer_sleeps_until = self._allocator.next_deadline()
            delay = None if deadline is None else deadline - self._clock.monotonic()
            if delay is not None:
                # A deadline that tick() did not clear must not make this loop spin.
                delay = max(delay, MIN_TIMER_DELAY)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for: see rmd.job_waiters
                    await self._timer_wakeup.wait()
            if deadline is not None:
                late = self._clock.monotonic() - deadline
                if late > STALL_THRESHOLD:
                    forgiven = self._allocator.resume_after_stall()
                    self._metrics.loop_stalled(seconds=late)
                    log.warning(
                        "daemon_stalled",
                        late_seconds=round(late, 3),
                        taskmanagers_given_fresh_heartbeat_timeout=forgiven,
                    )

    async def close(self) -> None:
        """Stop in-flight work. Pods are left as they are for the next start to adopt."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ effects
    def _spawn(self, coro: Any, *, name: str) -> None:
        if self._closing:
            coro.close()
            return
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create(self, name: str) -> None:
        if self._owner_gone:
            # A start failure, so the limiter bounds these; the JobManager pod goes with its
            # Deployment anyway.
            self.apply(
                self._allocator.create_failed(
                    name,
                    reason="OwnerDeleted",
                    message=f"the JobManager Deployment {self._owner_name} was deleted: a "
                    "TaskManager pod owned by it would be garbage-collected at once",
                )
            )
            return
        try:
            body = self._build_pod(pod_name=name)
            if self._reporter is not None:
                body = self._reporter.prepare_create(body)
            uid = await self._pods.create(body)
        except PodApiError as exc:
            log.warning(
                "pod_create_failed",
                pod=name,
                reason=exc.reason,
                status=exc.status,
                api_unavailable=exc.api_unavailable,
                message=exc.message,
            )
            self._metrics.pod_create_failed(reason=exc.reason)
            # A transient error (no connection, 429, 5xx) says the API server is unavailable,
            # RBAC or an exhausted quota that a person must act, not that the pod cannot
            # start: the allocator sends the same create again later. An admission denial
            # (AdmissionDenied) refused the pod itself: a start failure, paced by the limit.
            self.apply(
                self._allocator.create_failed(
                    name,
                    reason=exc.reason,
                    message=exc.message,
                    api_unavailable=exc.pod_not_judged,
                )
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected client error: never lose the TM
            log.exception("pod_create_crashed", pod=name)
            self.apply(self._allocator.create_failed(name, reason="error", message=str(exc)))
            return
        self._metrics.pod_created()
        log.info("pod_created", pod=name)
        if self._reporter is not None:
            self._reporter.pod_created(name, uid=uid)
        self.apply(self._allocator.create_succeeded(name))

    async def _delete(self, name: str, *, reason: str, resent: bool = False) -> None:
        def report(failure: Failure) -> None:
            exc = failure.error
            if isinstance(exc, PodApiError):
                log.warning(
                    "pod_delete_failed",
                    pod=name,
                    reason=reason,
                    status=exc.status,
                    message=exc.message,
                    attempt=failure.attempt,
                    retry_in=None if failure.delay is None else round(failure.delay, 3),
                )
            else:  # a bug: try again later all the same
                log.error(
                    "pod_delete_crashed",
                    pod=name,
                    reason=reason,
                    attempt=failure.attempt,
                    exc_info=exc,
                )

        if self._reporter is not None and not resent:
            await self._reporter.before_delete(name)
        await retry(
            lambda: self._pods.delete(name),
            policy=self._delete_retry,
            on_failure=report,
            pacing=self._pacing,
        )
        if not resent:  # a pod is counted once, however often its delete is sent
            self._metrics.pod_deleted(reason=reason)
        log.info("pod_deleted", pod=name, reason=reason, resent=resent)
        # The watch reports DELETED when the pod is really gone; nothing to feed back here.

    def _check_owner(self) -> None:
        """Ask whether the owner Deployment still exists (one question at a time)."""
        if self._owner_exists is None or self._owner_gone or self._owner_checking:
            return
        self._owner_checking = True
        self._spawn(self._ask_owner(self._owner_exists), name="owner check")

    async def _ask_owner(self, owner_exists: Callable[[], Awaitable[bool]]) -> None:
        try:
            if await owner_exists():
                return
        finally:
            self._owner_checking = False
        self._owner_gone = True
        log.error(
            "owner_deployment_deleted",
            deployment=self._owner_name,
            consequence="no more TaskManager pods are created: they would be garbage-collected "
            "at once; the JobManager pod is deleted with its Deployment",
        )

    # ------------------------------------------------------------------ notices
    def _record(self, notice: Notice) -> None:
        """Metrics and a log event for one notice; every kind of notice must be handled."""
        self._metrics.observe(notice)
        match notice:
            case TaskManagerChanged():
                log.info(
                    "taskmanager_state",
                    taskmanager=notice.taskmanager_id,
                    old=notice.old and str(notice.old),
                    new=notice.new and str(notice.new),
                    reason=notice.reason,
                )
            case TaskManagerLost():
                if notice.reason in (LossReason.POD_DELETED, LossReason.POD_MISSING):
                    self._check_owner()
                log.warning(
                    "taskmanager_lost",
                    taskmanager=notice.taskmanager_id,
                    reason=str(notice.reason),
                    was_registered=notice.was_registered,
                    jobs=list(notice.jobs_affected),
                )
            case TaskManagerRegistered():
                log.info(
                    "taskmanager_registered",
                    taskmanager=notice.taskmanager_id,
                    startup_seconds=round(notice.startup_seconds, 3),
                    recovered=notice.recovered,
                )
            case RecoveryCompleted(figures=figures):
                log.info("recovered", seconds=round(notice.seconds, 3), **asdict(figures))
            case SlotsAllocated():
                log.info("slots_allocated", job=notice.job_id, slots=list(notice.slot_ids))
            case SlotsFreed():
                log.info(
                    "slots_freed",
                    job=notice.job_id,
                    slots=list(notice.slot_ids),
                    reason=notice.reason,
                )
            case StartFailure():
                log.warning(
                    "start_failure", taskmanager=notice.taskmanager_id, reason=notice.reason
                )
            case CreateRetryScheduled():
                log.warning(
                    "pod_create_retry",
                    taskmanager=notice.taskmanager_id,
                    reason=notice.reason,
                    retry_in=round(notice.retry_in, 3),
                    start_failure=False,
                )
            case PodProblem():
                log.warning(
                    "pod_problem",
                    taskmanager=notice.taskmanager_id,
                    reason=notice.reason,
                    message=notice.message,
                )
            case StartsThrottled():
                log.warning(
                    "starts_throttled",
                    failures_in_window=notice.failures_in_window,
                    paused_for=round(notice.until - self._clock.wall(), 3),
                )
            case _:
                assert_never(notice)

    def _notify(self) -> None:
        # Long polls wake only when their job changed.
        self._job_waiters.changed()
        # Wake the timer only when the next deadline came earlier than the one it sleeps
        # until, or is overdue: a heartbeat (it moves a deadline later) costs it nothing.
        deadline = self._allocator.next_deadline()
        if deadline is not None and (
            self._timer_sleeps_until is None
            or deadline < self._timer_sleeps_until
            or deadline <= self._clock.monotonic()
        ):
            self._timer_sleeps_until = deadline
            self._timer_wakeup.set()
        if self._on_change is not None:
            self._on_change()
