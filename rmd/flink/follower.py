"""The JobMaster side for real Flink jobs: polls a JobManager's REST API, feeds the allocator.

Every ``poll_interval`` (after a failure: backoff with jitter up to ``max_backoff``, at least
a ``Retry-After``) one poll: step 1 each time (how soon a submitted job's demand is seen),
step 2 when ``usage_interval`` has passed since it last ran (its reads grow with the
TaskManagers, and it only times idle releases):

1. ``/jobs/overview``; for each live job its slot demand (:mod:`rmd.flink.demand`) from
   ``/jobs/:id`` (read once per job: the slot-sharing layout and, under the default
   scheduler, the parallelism never change) and, under the adaptive scheduler, from
   ``/jobs/:id/resource-requirements`` (every poll: a rescale changes the upper bounds).
   New or changed demand is declared, finished/failed/cancelled jobs are removed — through
   the same ``allocator.declare``/``remove_job`` + ``engine.apply`` as the HTTP API.
   In application mode (``on_application_end`` given) also ``/applications/overview`` where
   Flink has it (:mod:`rmd.flink.application`): the first poll that finds the application
   ended calls ``on_application_end`` once.
2. ``/taskmanagers`` and, for TaskManagers with every slot free, ``/taskmanagers/:id``: which
   TaskManagers Flink uses, reported to the allocator's release gate.

Missing information is never a change: a failed overview keeps every declaration, a failed
job read keeps that job's, a failed TaskManager list stops every idle timer. Bad answers are
logged and counted, never raised. Nothing is declared before the daemon is ready (the first
pod list adopted), just as the HTTP API answers 503 until then.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol, TypeVar
from urllib.parse import quote

import structlog

from rmd.api.validation import JOB_SLOTS_MAX
from rmd.core.allocator import Allocator
from rmd.core.clock import Clock
from rmd.core.model import Action, UnknownJob
from rmd.flink.answers import (
    ApplicationSummary,
    JobDetails,
    JobSummary,
    MalformedAnswer,
    TaskManagerUsage,
    parse_applications_overview,
    parse_job_details,
    parse_jobs_overview,
    parse_resource_requirements,
    parse_taskmanager_details,
    parse_taskmanagers,
    scheduler_refuses_requirements,
)
from rmd.flink.application import ApplicationEnd, application_end
from rmd.flink.demand import (
    DEFAULT_SCHEDULERS,
    JobProblem,
    ProblemReason,
    RequirementsSource,
    cap_problem,
    is_terminal,
    plan_follow,
    requirements_source,
    slots_needed,
)
from rmd.flink.rest import FailureReason, FlinkRestClient, FlinkRestError, RestAnswer
from rmd.flink.status import FollowerState, FollowerStatus
from rmd.flink.usage import needs_details, usage_report
from rmd.retry import Backoff

__all__ = ["FlinkFollower", "FollowerEngine", "FollowerMetrics", "PollOutcome", "retry_delay"]

log = structlog.get_logger("rmd.flink")

T = TypeVar("T")

DEFAULT_MAX_BACKOFF = 30.0
DEFAULT_MAX_PARALLEL_REQUESTS = 4


class FollowerEngine(Protocol):
    """What the follower needs of the daemon's engine (the HTTP API uses the same)."""

    @property
    def allocator(self) -> Allocator: ...

    def apply(self, actions: Sequence[Action]) -> None: ...

    @property
    def ready(self) -> bool: ...


class FollowerMetrics(Protocol):
    def poll_failed(self, *, reason: str) -> None: ...

    def job_problem(self, *, reason: str) -> None: ...

    def rest_reachable(self, reachable: bool) -> None: ...

    def jobs_followed(self, count: int) -> None: ...

    def taskmanagers(self, *, busy: int, idle: int, unmanaged: int) -> None: ...


class PollOutcome:
    """What went wrong during one poll (nothing: ``ok``)."""

    def __init__(self) -> None:
        self.first: FlinkRestError | MalformedAnswer | None = None  # logged and shown
        self.answered = False  # some failed request did get an answer (a bad one)
        self.retry_after: float | None = None  # the last Retry-After Flink sent

    @property
    def ok(self) -> bool:
        return self.first is None

    def add(self, error: FlinkRestError | MalformedAnswer) -> None:
        if self.first is None:
            self.first = error
        if isinstance(error, MalformedAnswer) or error.reason not in (
            FailureReason.UNREACHABLE,
            FailureReason.TIMEOUT,
        ):
            self.answered = True


FLINK_ORIGIN = "flink"  # the origin of the jobs the follower declares


class FlinkFollower:
    def __init__(
        self,
        *,
        engine: FollowerEngine,
        rest: FlinkRestClient,
        clock: Clock,
        poll_interval: float,
        usage_interval: float | None = None,
        metrics: FollowerMetrics | None = None,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_parallel_requests: int = DEFAULT_MAX_PARALLEL_REQUESTS,
        rng: random.Random | None = None,
        on_application_end: Callable[[ApplicationEnd], None] | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds (got {poll_interval})")
        self._engine = engine
        self._rest = rest
        self._clock = clock
        self._interval = poll_interval
        # TaskManager usage: never more often than the jobs (None: as often)
        self._usage_interval = max(usage_interval or poll_interval, poll_interval)
        self._metrics = metrics
        self._max_backoff = max(max_backoff, poll_interval)
        self._requests = asyncio.Semaphore(max_parallel_requests)
        self._rng = rng or random.Random()
        self._followed: dict[str, int] = {}  # job id -> slots declared
        self._resumed = False  # the jobs it declared before a restart are followed again
        self._details: dict[str, JobDetails] = {}  # read once per job
        self._vertices_only: set[str] = set()  # probed: the scheduler refuses requirements
        self._problems: dict[tuple[str, ProblemReason], str] = {}  # reported, not repeated
        self._unmanaged_seen: set[str] = set()
        self._state = FollowerState.STARTING
        self._reachable: bool | None = None
        self._failing_since: float | None = None
        self._last_poll: float | None = None
        self._last_error: str | None = None
        self._failures_in_row = 0
        self._on_application_end = on_application_end
        self._application_end: ApplicationEnd | None = None
        self._applications_listed = True  # until Flink answers 404 (1.x): no applications

    # ------------------------------------------------------------------ public

    @property
    def followed_jobs(self) -> dict[str, int]:
        return dict(self._followed)

    @property
    def application_ended(self) -> ApplicationEnd | None:
        """In application mode: how the application ended, once a poll saw it end."""
        return self._application_end

    def status(self) -> FollowerStatus:
        now = self._clock.monotonic()
        return FollowerStatus(
            rest_url=self._rest.base_url,
            state=self._state,
            jobs_followed=len(self._followed),
            reachable=self._reachable,
            failing_for=None if self._failing_since is None else now - self._failing_since,
            last_poll_age=None if self._last_poll is None else now - self._last_poll,
            last_error=self._last_error,
        )

    async def run(self) -> None:
        """Poll until cancelled."""
        usage_due_at = float("-inf")
        while True:
            delay = self._interval
            if self._engine.ready:
                try:
                    usage = self._clock.monotonic() >= usage_due_at
                    outcome = await self.poll_once(usage=usage)
                    if usage:
                        usage_due_at = self._clock.monotonic() + self._usage_interval
                    delay = self._next_delay(outcome)
                except Exception:  # a bug: log it, keep following
                    log.exception("flink_poll_crashed", url=self._rest.base_url)
            await asyncio.sleep(delay)

    async def poll_once(self, *, usage: bool = True) -> PollOutcome:
        """One poll: jobs, then (``usage``) TaskManagers. Never raises for what Flink
        answers."""
        errors = PollOutcome()
        await self._follow_jobs(errors)
        if usage:
            await self._follow_usage(errors)
        self._record_outcome(errors)
        return errors

    # ------------------------------------------------------------------ jobs

    async def _follow_jobs(self, errors: PollOutcome) -> None:
        if not self._resumed:
            # Restored from the stored state after a restart: Flink's jobs, declared by the
            # follower before; removed like any other when Flink no longer runs them.
            self._followed.update(self._engine.allocator.jobs_declared_by(FLINK_ORIGIN))
            self._resumed = True
        try:
            jobs = parse_jobs_overview((await self._get("/jobs/overview", errors)).body)
        except (FlinkRestError, MalformedAnswer) as exc:
            errors.add(exc)
            return  # no overview, no change: every job keeps its declaration
        if self._on_application_end is not None and self._application_end is None:
            await self._watch_application(jobs, errors)
        live = [job for job in jobs if not is_terminal(job.state)]
        demands = await self._bounded(self._job_demand(job, errors) for job in live)
        plan = plan_follow(
            followed=self._followed,
            jobs=jobs,
            demands={
                job.job_id: slots
                for job, slots in zip(live, demands, strict=True)
                if slots is not None and self._plausible(job.job_id, slots)
            },
        )
        allocator = self._engine.allocator
        for job_id, why in plan.remove.items():
            try:
                actions = allocator.remove_job(job_id)
            except UnknownJob:  # deleted through the HTTP API meanwhile
                actions = []
            self._engine.apply(actions)
            log.info("flink_job_removed", job=job_id, slots=self._followed.pop(job_id), why=why)
        for job_id, slots in plan.declare.items():
            problem = cap_problem(job_id, slots, max_slots=allocator.settings.max_slots)
            if problem is not None:
                self._report(problem)
            self._engine.apply(allocator.declare(job_id, slots, origin=FLINK_ORIGIN))
            log.info(
                "flink_job_declared", job=job_id, slots=slots, previous=self._followed.get(job_id)
            )
            self._followed[job_id] = slots
        self._forget_jobs_not_in({job.job_id for job in live})
        if self._metrics is not None:
            self._metrics.jobs_followed(len(self._followed))

    async def _watch_application(self, jobs: Sequence[JobSummary], errors: PollOutcome) -> None:
        applications: list[ApplicationSummary] | None = None
        if self._applications_listed:
            path = "/applications/overview"
            try:
                answer = await self._rest.get(path)
                if answer.status == 404:
                    self._applications_listed = False  # Flink 1.x: the jobs tell
                else:
                    _expect_ok(answer, path)
                    applications = parse_applications_overview(answer.body)
            except (FlinkRestError, MalformedAnswer) as exc:
                errors.add(exc)
                return  # unknown this time; never decided on half an answer
        end = application_end(applications=applications, jobs=jobs)
        if end is not None and self._on_application_end is not None:
            self._application_end = end
            log.info("flink_application_ended", state=end.state, parts=end.describe())
            self._on_application_end(end)

    async def _job_demand(self, job: JobSummary, errors: PollOutcome) -> int | None:
        """The job's slot demand now; None when it cannot be read this time."""
        try:
            details = await self._job_details(job, errors)
            if details is None:
                return None
            scheduler = job.scheduler or details.scheduler
            source = requirements_source(scheduler)
            if source is RequirementsSource.VERTICES or job.job_id in self._vertices_only:
                if scheduler is not None and scheduler not in DEFAULT_SCHEDULERS:
                    self._report(
                        JobProblem(
                            job.job_id,
                            ProblemReason.UNKNOWN_SCHEDULER,
                            f"Flink job {job.job_id} runs under the scheduler {scheduler!r}, "
                            "which rmd does not know; its demand is the vertices' parallelism",
                        )
                    )
                return slots_needed(details.vertices)
            return await self._adaptive_demand(job, details, source=source, errors=errors)
        except FlinkRestError as exc:
            errors.add(exc)
        except MalformedAnswer as exc:
            errors.add(exc)
            self._report(JobProblem(job.job_id, ProblemReason.MALFORMED, str(exc)))
        return None

    async def _job_details(self, job: JobSummary, errors: PollOutcome) -> JobDetails | None:
        details = self._details.get(job.job_id)
        if details is not None:
            return details
        path = f"/jobs/{quote(job.job_id, safe='')}"
        answer = await self._rest.get(path)
        if answer.status == 404:
            return None  # gone between the overview and now: the next overview says so
        _expect_ok(answer, path)
        details = parse_job_details(answer.body, job_id=job.job_id)
        if not details.vertices:
            return None  # not planned yet (initializing)
        if all(vertex.parallelism is not None for vertex in details.vertices):
            self._details[job.job_id] = details  # undecided parallelism: read again
        return details

    async def _adaptive_demand(
        self,
        job: JobSummary,
        details: JobDetails,
        *,
        source: RequirementsSource,
        errors: PollOutcome,
    ) -> int | None:
        path = f"/jobs/{quote(job.job_id, safe='')}/resource-requirements"
        answer = await self._rest.get(path)
        if answer.status == 200:
            bounds = parse_resource_requirements(answer.body, job_id=job.job_id)
            return slots_needed(details.vertices, bounds)
        if answer.status == 404:
            return None
        if source is RequirementsSource.PROBE and scheduler_refuses_requirements(
            answer.status, answer.body
        ):
            self._vertices_only.add(job.job_id)  # the default scheduler: never ask again
            return slots_needed(details.vertices)
        self._report(
            JobProblem(
                job.job_id,
                ProblemReason.UNKNOWN_SCHEDULER,
                f"Flink job {job.job_id}: GET {path} answered status {answer.status} "
                f"({_first_error(answer.body)}) where the adaptive scheduler answers its "
                "requirements; its demand is the vertices' parallelism meanwhile",
            )
        )
        return slots_needed(details.vertices)

    def _plausible(self, job_id: str, slots: int) -> bool:
        """The HTTP API's bound on one job's slots holds for Flink's jobs too."""
        if slots <= JOB_SLOTS_MAX:
            return True
        self._report(
            JobProblem(
                job_id,
                ProblemReason.MALFORMED,
                f"Flink job {job_id} would need {slots} slots, more than any job may ask for "
                f"({JOB_SLOTS_MAX}); not declared: check its parallelism",
            )
        )
        return False

    def _forget_jobs_not_in(self, live: set[str]) -> None:
        for job_id in [job_id for job_id in self._details if job_id not in live]:
            del self._details[job_id]
        self._vertices_only &= live
        for key in [key for key in self._problems if key[0] not in live]:
            del self._problems[key]

    def _report(self, problem: JobProblem) -> None:
        key = (problem.job_id, problem.reason)
        if self._problems.get(key) == problem.detail:
            return
        self._problems[key] = problem.detail
        log.warning(
            "flink_job_problem",
            job=problem.job_id,
            reason=str(problem.reason),
            detail=problem.detail,
        )
        if self._metrics is not None:
            self._metrics.job_problem(reason=str(problem.reason))

    # ------------------------------------------------------------------ TaskManagers

    async def _follow_usage(self, errors: PollOutcome) -> None:
        allocator = self._engine.allocator
        try:
            listed = parse_taskmanagers((await self._get("/taskmanagers", errors)).body)
        except (FlinkRestError, MalformedAnswer) as exc:
            errors.add(exc)
            self._engine.apply(allocator.external_usage_unknown())
            return
        ours = [tm.taskmanager_id for tm in listed if allocator.is_known_pod(tm.taskmanager_id)]
        to_check = needs_details(listed, ours=ours)
        checked = await self._bounded(self._taskmanager(name, errors) for name in to_check)
        details = {usage.taskmanager_id: usage for usage in checked if usage is not None}
        report = {
            name: busy for name, busy in usage_report(listed, details).items() if name in ours
        }
        self._engine.apply(allocator.observe_external_usage(report))
        self._note_unmanaged(listed, ours=set(ours))
        if self._metrics is not None:
            busy = sum(report.values())
            self._metrics.taskmanagers(
                busy=busy, idle=len(report) - busy, unmanaged=len(listed) - len(ours)
            )

    async def _taskmanager(self, name: str, errors: PollOutcome) -> TaskManagerUsage | None:
        path = f"/taskmanagers/{quote(name, safe='')}"
        try:
            answer = await self._rest.get(path)
            if answer.status in (404, 500):
                return None  # left Flink between the list and now (Flink answers 500)
            _expect_ok(answer, path)
            return parse_taskmanager_details(answer.body, taskmanager_id=name)
        except (FlinkRestError, MalformedAnswer) as exc:
            errors.add(exc)
            return None

    def _note_unmanaged(self, listed: Sequence[TaskManagerUsage], *, ours: set[str]) -> None:
        unmanaged = {tm.taskmanager_id for tm in listed} - ours
        for name in sorted(unmanaged - self._unmanaged_seen):
            log.info(
                "flink_taskmanager_not_managed",
                taskmanager=name,
                detail="Flink lists a TaskManager that rmd did not start (rmd sets "
                "taskmanager.resource-id to the pod name on the TaskManagers it starts); rmd "
                "neither counts nor releases it",
            )
        self._unmanaged_seen = unmanaged

    # ------------------------------------------------------------------ plumbing

    async def _get(self, path: str, errors: PollOutcome) -> RestAnswer:
        answer = await self._rest.get(path)
        if answer.retry_after is not None:
            errors.retry_after = answer.retry_after
        _expect_ok(answer, path)
        return answer

    async def _bounded(self, calls: Iterable[Awaitable[T]]) -> list[T]:
        """Run ``calls`` concurrently, at most ``max_parallel_requests`` at once."""

        async def one(call: Awaitable[T]) -> T:
            async with self._requests:
                return await call

        return list(await asyncio.gather(*(one(call) for call in calls)))

    def _record_outcome(self, outcome: PollOutcome) -> None:
        now = self._clock.monotonic()
        if outcome.first is None:
            self._record_success(now)
        else:
            self._record_failure(outcome.first, answered=outcome.answered, now=now)
        if self._metrics is not None:
            self._metrics.rest_reachable(bool(self._reachable))

    def _record_success(self, now: float) -> None:
        if self._state is FollowerState.FAILING:
            log.info(
                "flink_rest_recovered",
                url=self._rest.base_url,
                failed_for=round(now - (self._failing_since or now), 3),
            )
        self._state = FollowerState.FOLLOWING
        self._reachable = True
        self._failing_since = None
        self._last_poll = now
        self._last_error = None
        self._failures_in_row = 0

    def _record_failure(
        self, error: FlinkRestError | MalformedAnswer, *, answered: bool, now: float
    ) -> None:
        message = str(error)
        if self._state is not FollowerState.FAILING or message != self._last_error:
            log.warning(
                "flink_rest_failing",
                url=self._rest.base_url,
                error=message,
                consequence="last demand kept; no TaskManager released as idle",
            )
        if self._state is not FollowerState.FAILING:
            self._failing_since = now
        self._state = FollowerState.FAILING
        self._reachable = answered  # some request got an answer, if a bad one
        self._last_error = message
        self._failures_in_row += 1
        if self._metrics is not None:
            self._metrics.poll_failed(reason=_failure_reason(error))

    def _next_delay(self, outcome: PollOutcome) -> float:
        if outcome.ok:
            return self._interval
        return retry_delay(
            self._failures_in_row,
            interval=self._interval,
            max_backoff=self._max_backoff,
            retry_after=outcome.retry_after,
            rng=self._rng,
        )


def retry_delay(
    failures: int,
    *,
    interval: float,
    max_backoff: float,
    retry_after: float | None,
    rng: random.Random,
) -> float:
    """The wait before the next poll after ``failures`` failed polls in a row: exponential
    backoff from ``interval`` with equal jitter, capped at ``max_backoff``; at least a
    ``Retry-After`` the server sent (capped too), never less than ``interval``."""
    backoff = Backoff(
        base=interval,
        cap=max(interval, max_backoff),
        floor=interval,
        min_fraction=0.5,
        max_retry_after=max_backoff,
    )
    delay = backoff.delay(failures, uniform=rng.random)
    if retry_after is not None:
        delay = max(delay, backoff.delay(failures, uniform=rng.random, retry_after=retry_after))
    return delay


def _expect_ok(answer: RestAnswer, path: str) -> None:
    if answer.status != 200:
        raise FlinkRestError(
            FailureReason.HTTP_ERROR,
            path,
            f"status {answer.status}: {_first_error(answer.body)}",
        )


def _first_error(body: object) -> str:
    """The first line of Flink's ``{"errors": [...]}``, or a note that there is none."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return "no error message"
    lines = [line.strip() for e in errors if isinstance(e, str) for line in e.splitlines()]
    lines = [line for line in lines if line]
    for line in lines:  # Flink's stack traces: the exception line says the most
        if "Exception" in line and not line.startswith(("at ", "<")):
            return line[:200]
    return lines[0][:200] if lines else "no error message"


def _failure_reason(error: FlinkRestError | MalformedAnswer) -> str:
    if isinstance(error, MalformedAnswer):
        return FailureReason.MALFORMED.value
    return error.reason.value
