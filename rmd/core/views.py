"""What the allocator shows: read-only views of its records, and why a job waits.

:class:`AllocatorViews` is assembled by the allocator from its records whenever a view is
asked for; nothing here changes a record. The sentences themselves are in
:mod:`rmd.core.explain`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from rmd.core import explain
from rmd.core.clock import Clock, wall_time
from rmd.core.model import (
    JobSummary,
    JobView,
    ProblemView,
    SlotView,
    StatusView,
    TaskManagerState,
    TaskManagerView,
)
from rmd.core.ratelimit import StartFailureLimiter
from rmd.core.records import (
    COMING,
    LIVE,
    CreateRetry,
    JobRecord,
    TaskManagerIndex,
    TaskManagerRecord,
    slot_id,
)
from rmd.core.slotcap import SlotCap

# Why a requested or pending TaskManager is not registered yet (rmd_pending_taskmanagers).
PENDING_REASONS = (
    "creating",  # its pod create is on its way
    "create-retry",  # the create could not reach the API server; it is sent again
    "scheduling",  # the pod exists, no node yet
    "unschedulable",  # the scheduler found no node
    "image-pull",  # ErrImagePull, ImagePullBackOff, InvalidImageName
    "container-problem",  # another reason the container waits (CreateContainerConfigError, ...)
    "starting",  # on a node, the TaskManager has not registered yet
)
_IMAGE_PULL_PROBLEMS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})


def pending_reason(tm: TaskManagerRecord) -> str:
    """One of PENDING_REASONS for a requested or pending TaskManager."""
    if tm.state is TaskManagerState.REQUESTED:
        return "create-retry" if tm.create_retry is not None else "creating"
    if tm.problem is not None:
        if tm.problem.reason == "Unschedulable":
            return "unschedulable"
        if tm.problem.reason in _IMAGE_PULL_PROBLEMS:
            return "image-pull"
        return "container-problem"
    return "starting" if tm.is_scheduled else "scheduling"


def taskmanager_view(tm: TaskManagerRecord, *, clock: Clock) -> TaskManagerView:
    """Every slot of a registered TaskManager (free ones with job None); none before.
    ``clock`` turns its creation time into wall-clock time (``created_at``)."""
    slots = tuple(
        SlotView(slot_id(tm.name, index), tm.name, job_id, tm.address)
        for index, job_id in enumerate(tm.slot_jobs)
    )
    return TaskManagerView(
        taskmanager_id=tm.name,
        state=tm.state,
        slots_total=tm.slots_total,
        slots=slots if tm.is_registered else (),
        address=tm.address,
        idle_since=tm.idle_since_wall,
        problem=tm.problem,
        pod_phase=tm.pod_phase,
        node_name=tm.node_name,
        kept_as_spare=tm.is_registered and tm.idle_checked,
        delete_waits_for_create=tm.delete_when_created is not None,
        created_at=wall_time(clock, tm.created_at),
    )


def job_slot_views(job: JobRecord, taskmanagers: TaskManagerIndex) -> tuple[SlotView, ...]:
    """The job's slots in TaskManager creation order, then slot index."""
    views: list[SlotView] = []
    for name in sorted(job.slots, key=lambda name: taskmanagers[name].order):
        address = taskmanagers[name].address
        views.extend(
            SlotView(slot_id(name, index), name, job.job_id, address)
            for index in sorted(job.slots[name])
        )
    return tuple(views)


@dataclass(frozen=True, slots=True)
class JobShortfall:
    """Of a job's unmet slots: how many no existing or coming pod covers (they wait for pods
    yet to be created), and how many of those nothing can provide because of max_slots."""

    uncovered: int
    beyond_cap: int


def job_shortfalls(
    jobs: Iterable[JobRecord], live: Iterable[TaskManagerRecord], *, cap: SlotCap
) -> dict[str, JobShortfall]:
    """Walk the jobs first-come first-served over the free slots that exist, the slots on
    their way, and the slots max_slots still allows to create (whole TaskManagers only).

    ``live``: the requested, pending and registered TaskManagers.
    """
    live = list(live)
    jobs = [job for job in jobs if job.unmet]
    existing = sum(tm.free for tm in live) + sum(
        tm.slots_total for tm in live if tm.is_coming and not tm.adopted
    )
    per_taskmanager = cap.slots_per_taskmanager
    creatable = per_taskmanager * cap.taskmanagers_allowed(
        math.ceil(sum(job.unmet for job in jobs) / per_taskmanager),
        slots_in_use=sum(tm.slots_total for tm in live),
    )
    result: dict[str, JobShortfall] = {}
    for job in jobs:
        from_existing = min(job.unmet, existing)
        existing -= from_existing
        uncovered = job.unmet - from_existing
        from_new = min(uncovered, creatable)
        creatable -= from_new
        result[job.job_id] = JobShortfall(uncovered=uncovered, beyond_cap=uncovered - from_new)
    return result


@dataclass(frozen=True, kw_only=True)
class AllocatorViews:
    """The allocator's records at one moment, seen from outside."""

    taskmanagers: TaskManagerIndex
    jobs: Mapping[str, JobRecord]  # in declaration order
    limiter: StartFailureLimiter
    cap: SlotCap
    clock: Clock
    orphans_deleting: int
    # The last pod create that failed, while it is recent enough to be news.
    recent_create_failure: ProblemView | None
    # A create in flight this long (seconds) has gone unanswered: the API server hangs.
    create_unanswered_after: float = 10.0

    def job_view(self, job: JobRecord) -> JobView:
        return self._job_view(job, self._shortfalls().get(job.job_id))

    def job_summary(self, job: JobRecord) -> JobSummary:
        """No slot list; when the job is fulfilled, O(1)."""
        reasons: list[str] = []
        problems: list[ProblemView] = []
        if job.unmet:
            reasons, problems = self._why_waiting(job, self._shortfalls().get(job.job_id))
        return JobSummary(
            job_id=job.job_id,
            slots_required=job.required,
            slots_allocated=job.allocated,
            version=job.version,
            unfulfilled_reason="; ".join(reasons) or None,
            problems=tuple(problems),
            waiting_since=wall_time(self.clock, job.waiting[0]) if job.waiting else None,
        )

    def job_views(self) -> list[JobView]:
        shortfalls = self._shortfalls()
        return [self._job_view(job, shortfalls.get(job.job_id)) for job in self.jobs.values()]

    def taskmanager_views(self) -> list[TaskManagerView]:
        return [
            taskmanager_view(tm, clock=self.clock) for tm in self.taskmanagers.in_creation_order()
        ]

    def status(self) -> StatusView:
        now = self.clock.monotonic()
        counts = {state.value: 0 for state in TaskManagerState}
        slots_total = slots_allocated = slots_coming = 0
        for tm in self.taskmanagers:
            counts[tm.state.value] += 1
            if tm.is_registered:
                slots_total += tm.slots_total
                slots_allocated += tm.allocated
            elif tm.is_coming:
                slots_coming += tm.slots_total
        paused_until = self.limiter.paused_until(now)
        pending_by_reason = dict.fromkeys(PENDING_REASONS, 0)
        for tm in self.taskmanagers.in_states(*COMING):
            pending_by_reason[pending_reason(tm)] += 1
        waits = [job.waiting[0] for job in self.jobs.values() if job.waiting]
        return StatusView(
            taskmanagers=counts,
            slots_total=slots_total,
            slots_free=slots_total - slots_allocated,
            slots_allocated=slots_allocated,
            jobs=len(self.jobs),
            pending_slot_demand=sum(job.unmet for job in self.jobs.values()),
            starts_throttled_until=(
                None if paused_until is None else wall_time(self.clock, paused_until)
            ),
            extra={
                "slots_coming": slots_coming,
                "creates_awaiting_retry": len(self._create_retries()),
                "creates_unanswered": len(self._unanswered_creates()),
                "start_failures_last_minute": self.limiter.failures_in_window(now),
                "orphan_pods_deleting": self.orphans_deleting,
            },
            jobs_waiting=len(waits),
            oldest_wait_seconds=max(0.0, now - min(waits)) if waits else 0.0,
            pending_by_reason=pending_by_reason,
        )

    def _shortfalls(self) -> dict[str, JobShortfall]:
        live = self.taskmanagers.in_states(*LIVE)
        return job_shortfalls(self.jobs.values(), live, cap=self.cap)

    def _why_waiting(
        self, job: JobRecord, shortfall: JobShortfall | None
    ) -> tuple[list[str], list[ProblemView]]:
        if not job.unmet or shortfall is None:
            return [], []
        reasons = list(self._waiting_reasons(job, shortfall))
        problems = self._problems_of_coming_pods()
        reasons.extend(
            explain.create_failure_reason(problem)
            if problem.taskmanager_id not in self.taskmanagers
            else explain.pod_problem_reason(problem)
            for problem in problems
        )
        return reasons, problems

    def _job_view(self, job: JobRecord, shortfall: JobShortfall | None) -> JobView:
        reasons, problems = self._why_waiting(job, shortfall)
        return JobView(
            job_id=job.job_id,
            slots_required=job.required,
            slots_allocated=job.allocated,
            slots=job_slot_views(job, self.taskmanagers),
            unfulfilled_reason="; ".join(reasons) or None,
            problems=tuple(problems),
            waiting_since=wall_time(self.clock, job.waiting[0]) if job.waiting else None,
        )

    def _waiting_reasons(self, job: JobRecord, shortfall: JobShortfall) -> Iterator[str]:
        if shortfall.beyond_cap and self.cap.max_slots is not None:
            yield explain.slot_cap_reason(
                short=shortfall.beyond_cap, required=job.required, max_slots=self.cap.max_slots
            )
        retries = self._create_retries()
        if retries:
            first = min(retries, key=lambda retry: retry.at)
            yield explain.api_unreachable_reason(
                waiting=len(retries),
                error=first.error,
                retry_in=max(0.0, first.at - self.clock.monotonic()),
            )
        unanswered = self._unanswered_creates()
        if unanswered:
            yield explain.creates_unanswered_reason(
                waiting=len(unanswered),
                seconds=self.clock.monotonic() - min(tm.created_at for tm in unanswered),
            )
        if shortfall.uncovered <= shortfall.beyond_cap:
            return
        now = self.clock.monotonic()
        limiter = self.limiter
        failures = limiter.failures_in_window(now)
        paused_until = limiter.paused_until(now)
        in_flight = self.taskmanagers.count(*COMING)
        if paused_until is not None:
            yield explain.starts_paused_reason(
                failures=failures, limit=limiter.limit, resumes_in=paused_until - now
            )
        elif limiter.creation_allowance(now=now, in_flight=in_flight) == 0:
            yield explain.starts_limited_reason(failures=failures, limit=limiter.limit)

    def _create_retries(self) -> list[CreateRetry]:
        """The creates that could not reach the API server and wait to be sent again."""
        requested = self.taskmanagers.in_states(TaskManagerState.REQUESTED)
        return [tm.create_retry for tm in requested if tm.create_retry is not None]

    def _unanswered_creates(self) -> list[TaskManagerRecord]:
        """The TaskManagers whose create was sent long ago and has had no answer yet."""
        overdue = self.clock.monotonic() - self.create_unanswered_after
        return [
            tm
            for tm in self.taskmanagers.in_states(TaskManagerState.REQUESTED)
            if tm.create_retry is None and tm.confirmed_at is None and tm.created_at <= overdue
        ]

    def _problems_of_coming_pods(self) -> list[ProblemView]:
        problems = [
            tm.problem
            for tm in self.taskmanagers.in_creation_order()
            if tm.is_coming and tm.problem is not None
        ]
        if self.recent_create_failure is not None:
            problems.append(self.recent_create_failure)
        return problems
