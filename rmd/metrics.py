"""Prometheus metrics of the daemon.

Gauges are computed at scrape time from the allocator's ``StatusView`` (a custom collector),
so they can never go stale. Counters and histograms are fed by the edges: the core's notices
through :meth:`RmdMetrics.observe`, Kubernetes calls through the other methods.

The four Flink-compatible gauges keep the meaning of Flink's resource-manager metrics:
``numRegisteredTaskManagers``, ``numPendingTaskManagers`` (pods requested or started but not
registered), ``taskSlotsTotal`` and ``taskSlotsAvailable`` (slots of registered TaskManagers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import assert_never

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from rmd.core.model import (
    CreateRetryScheduled,
    LossReason,
    Notice,
    PodProblem,
    RecoveryCompleted,
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
)
from rmd.flink.demand import ProblemReason
from rmd.flink.rest import FailureReason
from rmd.kube.retry import REQUEST_RESULTS

__all__ = [
    "API_REQUEST_BUCKETS",
    "DURATION_BUCKETS",
    "FlinkMetrics",
    "ReporterMetrics",
    "RmdMetrics",
]

# Seconds to minutes: a slot on an idle registered TaskManager is handed out in milliseconds,
# a new pod takes seconds (p99 ≤ 5 s without image pull), an image pull or a crowded scheduler
# minutes; the registration timeout is 5 minutes.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)

# A Kubernetes API call takes milliseconds, on a slow API server seconds: finer buckets below
# 50 ms, then DURATION_BUCKETS up to the default request timeout (30 s).
API_REQUEST_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    *(seconds for seconds in DURATION_BUCKETS if 0.05 <= seconds <= 30.0),
)

# Reasons a pod may carry that a human has to fix; pre-created so dashboards see zeros.
_KNOWN_POD_PROBLEMS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "Unschedulable")


class _StatusCollector:
    """Gauges read from the allocator's status at every scrape."""

    def __init__(self, status: Callable[[], StatusView]) -> None:
        self._status = status

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._status())

    @staticmethod
    def _families(status: StatusView | None) -> list[Metric]:
        registered = GaugeMetricFamily(
            "rmd_num_registered_taskmanagers",
            "Number of registered TaskManagers (Flink: numRegisteredTaskManagers).",
        )
        pending = GaugeMetricFamily(
            "rmd_num_pending_taskmanagers",
            "TaskManager pods requested or started but not registered yet "
            "(Flink: numPendingTaskManagers).",
        )
        slots_total = GaugeMetricFamily(
            "rmd_task_slots",
            "Task slots of registered TaskManagers (Flink: taskSlotsTotal).",
        )
        slots_available = GaugeMetricFamily(
            "rmd_task_slots_available",
            "Free task slots of registered TaskManagers (Flink: taskSlotsAvailable).",
        )
        by_state = GaugeMetricFamily(
            "rmd_taskmanagers",
            "TaskManagers by life-cycle state.",
            labels=["state"],
        )
        jobs = GaugeMetricFamily("rmd_jobs", "Jobs with a declared slot requirement.")
        demand = GaugeMetricFamily(
            "rmd_pending_slot_demand",
            "Slots required by jobs but not allocated yet, over all jobs.",
        )
        throttled = GaugeMetricFamily(
            "rmd_starts_throttled",
            "1 while the start-failure rate limit holds back new TaskManager pods, else 0.",
        )
        jobs_waiting = GaugeMetricFamily("rmd_jobs_waiting", "Jobs with unmet slots.")
        oldest_wait = GaugeMetricFamily(
            "rmd_job_oldest_wait_seconds",
            "How long the longest-waiting unmet slot of any job has waited; 0 when none waits.",
        )
        pending_by_reason = GaugeMetricFamily(
            "rmd_pending_taskmanagers",
            "Requested and pending TaskManagers by why they are not registered yet.",
            labels=["reason"],
        )
        families: list[Metric] = [
            registered,
            pending,
            slots_total,
            slots_available,
            by_state,
            jobs,
            demand,
            throttled,
            jobs_waiting,
            oldest_wait,
            pending_by_reason,
        ]
        if status is None:
            return families
        counts = status.taskmanagers
        registered.add_metric([], counts.get(TaskManagerState.REGISTERED, 0))
        pending.add_metric(
            [],
            counts.get(TaskManagerState.REQUESTED, 0) + counts.get(TaskManagerState.PENDING, 0),
        )
        slots_total.add_metric([], status.slots_total)
        slots_available.add_metric([], status.slots_free)
        for state in TaskManagerState:
            by_state.add_metric([state.value], counts.get(state, 0))
        jobs.add_metric([], status.jobs)
        demand.add_metric([], status.pending_slot_demand)
        throttled.add_metric([], 0 if status.starts_throttled_until is None else 1)
        jobs_waiting.add_metric([], status.jobs_waiting)
        oldest_wait.add_metric([], status.oldest_wait_seconds)
        for reason, count in status.pending_by_reason.items():
            pending_by_reason.add_metric([reason], count)
        return families


class RmdMetrics:
    """All metrics of one daemon, in their own registry (never the process-wide default)."""

    def __init__(self, *, registry: CollectorRegistry, status: Callable[[], StatusView]) -> None:
        self.registry = registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(_StatusCollector(status))

        self._pods_created = Counter(
            "rmd_pods_created",
            "TaskManager pods created through the Kubernetes API.",
            registry=registry,
        )
        self._pod_create_failures = Counter(
            "rmd_pod_create_failures",
            "TaskManager pod creates that failed (after the gateway's retries), by reason: "
            "ConnectionError, Timeout, Forbidden (RBAC), QuotaExceeded, AdmissionDenied "
            "(an admission plugin or webhook refused the pod), Invalid, ...",
            ["reason"],
            registry=registry,
        )
        self._pods_deleted = Counter(
            "rmd_pods_deleted",
            "TaskManager pods deleted through the Kubernetes API, by why the daemon released them.",
            ["reason"],
            registry=registry,
        )
        self._api_errors = Counter(
            "rmd_kubernetes_api_errors",
            "Failed Kubernetes API calls by HTTP status code (0 = no HTTP answer: connection).",
            ["code"],
            registry=registry,
        )
        self._taskmanagers_lost = Counter(
            "rmd_taskmanagers_lost",
            "TaskManagers that went away without the daemon asking, by reason.",
            ["reason"],
            registry=registry,
        )
        self._start_failures = Counter(
            "rmd_start_failures",
            "TaskManagers that failed to start: create errors, pods that died or timed out "
            "before registering.",
            registry=registry,
        )
        self._start_throttle_trips = Counter(
            "rmd_start_throttle_trips",
            "Times the start-failure rate limit tripped and held back new pods.",
            registry=registry,
        )
        self._pod_problems = Counter(
            "rmd_pod_problems",
            "Pod problems that need a human (image pull errors, unschedulable), by reason.",
            ["reason"],
            registry=registry,
        )
        self._loop_stalls = Counter(
            "rmd_daemon_stalls",
            "Times the daemon found itself woken past a deadline by more than "
            "rmd.driver.STALL_THRESHOLD seconds (process stopped, loop blocked).",
            registry=registry,
        )
        self._loop_stall_seconds = Counter(
            "rmd_daemon_stalled_seconds",
            "Seconds the daemon stood still past its deadlines, summed over stalls.",
            registry=registry,
        )
        self._watch_restarts = Counter(
            "rmd_watch_restarts",
            "Restarts of the TaskManager pod watch, by reason.",
            ["reason"],
            registry=registry,
        )
        self._watch_relists = Counter(
            "rmd_watch_relists",
            "Full LISTs of the TaskManager pods after the first one: after 410 Gone or failed "
            "watches, and the periodic resync.",
            registry=registry,
        )
        self._watch_lists_seen = 0
        self._api_requests = Histogram(
            "rmd_kubernetes_api_request_duration_seconds",
            "Kubernetes API requests of the pod gateway (every attempt) and the pod watch's "
            "LISTs, by verb and result (success, client-error, server-error, no-answer).",
            ["verb", "result"],
            buckets=API_REQUEST_BUCKETS,
            registry=registry,
        )
        self._asyncio_tasks = Gauge(
            "rmd_asyncio_tasks",
            "asyncio tasks alive in the daemon's event loop (read at scrape time; for leaks).",
            registry=registry,
        )
        self._heartbeat_channels = Gauge(
            "rmd_heartbeat_channels",
            "Heartbeat channels (WebSockets of TaskManager agents) open now.",
            registry=registry,
        )
        self._leader = Gauge(
            "rmd_leader",
            "1 while this daemon is the leader (always, without high availability), else 0.",
            registry=registry,
        )
        self._leader.set(1)
        self._leader_transitions = Counter(
            "rmd_leader_transitions",
            "Times this daemon became the leader or stopped being it (high availability).",
            ["change"],
            registry=registry,
        )
        self._slot_allocation = Histogram(
            "rmd_slot_allocation_seconds",
            "Time from a job's slot demand to the slot being allocated to it.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._taskmanager_startup = Histogram(
            "rmd_taskmanager_startup_seconds",
            "Time from the TaskManager pod create to the TaskManager's registration.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._recovery_taskmanagers = Counter(
            "rmd_recovery_taskmanagers",
            "TaskManager pods found at start-up recovery, by outcome: adopted (live, kept), "
            "deleted (finished or unscheduled), reregistered, not-reregistered (lost first).",
            ["outcome"],
            registry=registry,
        )
        self._state_bytes = Gauge(
            "rmd_state_bytes",
            "Size of the last state written to rmd-state-<cluster-id> (a ConfigMap holds at "
            "most 1 MiB; a warning is logged from 900 KiB).",
            registry=registry,
        )
        self._recovery_jobs = Gauge(
            "rmd_recovery_jobs_restored",
            "Jobs the last start-up recovery read back from the stored state.",
            registry=registry,
        )
        self._recovery_seconds = Gauge(
            "rmd_recovery_seconds",
            "Last start-up recovery: adoption of the pods until every adopted TaskManager "
            "registered again or was lost.",
            registry=registry,
        )
        self._state_writes = Counter(
            "rmd_state_writes",
            "Writes of the rmd-state-<cluster-id> ConfigMap (demand and assignments), by "
            "result: ok, error.",
            ["result"],
            registry=registry,
        )
        for outcome in ("adopted", "deleted", "reregistered", "not-reregistered"):
            self._recovery_taskmanagers.labels(outcome=outcome)
        for result in ("ok", "error"):
            self._state_writes.labels(result=result)
        # Label values known in advance start at zero, so rate() works from the first scrape.
        for release_reason in ReleaseReason:
            self._pods_deleted.labels(reason=release_reason.value)
        for loss_reason in LossReason:
            self._taskmanagers_lost.labels(reason=loss_reason.value)
        for problem in _KNOWN_POD_PROBLEMS:
            self._pod_problems.labels(reason=problem)
        for verb in ("create", "patch", "delete", "list"):
            for result in REQUEST_RESULTS:
                self._api_requests.labels(verb=verb, result=result)

    def observe(self, notice: Notice) -> None:
        """Update counters and histograms from one of the core's notices."""
        match notice:
            case SlotsAllocated(waited_seconds=waited):
                for seconds in waited:
                    self._slot_allocation.observe(max(0.0, seconds))
            case TaskManagerRegistered(startup_seconds=seconds):
                self._taskmanager_startup.observe(max(0.0, seconds))
            case TaskManagerLost(reason=reason):
                self._taskmanagers_lost.labels(reason=str(reason)).inc()
            case StartFailure():
                self._start_failures.inc()
            case StartsThrottled():
                self._start_throttle_trips.inc()
            case PodProblem(reason=reason):
                self._pod_problems.labels(reason=reason).inc()
            case TaskManagerChanged() | SlotsFreed():
                pass  # the state gauges are read at scrape time
            case CreateRetryScheduled():
                pass  # the failed call is counted in rmd_kubernetes_api_errors_total
            case RecoveryCompleted(figures=figures, seconds=seconds):
                outcomes = {
                    "adopted": figures.adopted,
                    "deleted": figures.deleted,
                    "reregistered": figures.reregistered,
                    "not-reregistered": figures.not_reregistered,
                }
                for outcome, count in outcomes.items():
                    self._recovery_taskmanagers.labels(outcome=outcome).inc(count)
                self._recovery_jobs.set(figures.jobs_restored)
                self._recovery_seconds.set(seconds)
            case _:
                assert_never(notice)

    def pod_created(self) -> None:
        self._pods_created.inc()

    def pod_create_failed(self, *, reason: str) -> None:
        self._pod_create_failures.labels(reason=reason).inc()

    def state_written(self, *, result: str) -> None:
        self._state_writes.labels(result=result).inc()

    def state_size(self, size: int) -> None:
        self._state_bytes.set(size)

    def count_tasks_of(self, loop: asyncio.AbstractEventLoop) -> None:
        """``rmd_asyncio_tasks`` counts ``loop``'s tasks from now on (one set walk a scrape)."""
        self._asyncio_tasks.set_function(lambda: len(asyncio.all_tasks(loop)))

    def heartbeat_channel_opened(self) -> None:
        self._heartbeat_channels.inc()

    def heartbeat_channel_closed(self) -> None:
        self._heartbeat_channels.dec()

    def leadership(self, *, leading: bool, transition: bool = True) -> None:
        """This daemon leads (1) or follows (0); ``transition``: it changed (counted)."""
        self._leader.set(1 if leading else 0)
        if transition:
            self._leader_transitions.labels(change="acquired" if leading else "lost").inc()

    def loop_stalled(self, *, seconds: float) -> None:
        self._loop_stalls.inc()
        self._loop_stall_seconds.inc(seconds)

    def pod_deleted(self, *, reason: str) -> None:
        self._pods_deleted.labels(reason=reason).inc()

    def api_error(self, *, status: int) -> None:
        """A failed Kubernetes API call; ``status`` 0 when no HTTP answer came (connection)."""
        self._api_errors.labels(code=str(status)).inc()

    def watch_restarted(self, *, reason: str) -> None:
        self._watch_restarts.labels(reason=reason).inc()

    def watch_listed(self) -> None:
        """A full LIST of the pods goes out; every one after the first is a relist."""
        self._watch_lists_seen += 1
        if self._watch_lists_seen > 1:
            self._watch_relists.inc()

    def api_request(self, verb: str, result: str, seconds: float) -> None:
        """One Kubernetes API request (a :data:`rmd.kube.retry.RequestObserver`)."""
        self._api_requests.labels(verb=verb, result=result).observe(max(0.0, seconds))

    def follow_write_health(self, unanswered: Callable[[], bool]) -> None:
        """``rmd_kubernetes_writes_unanswered``: ``unanswered()`` read at every scrape."""
        gauge = Gauge(
            "rmd_kubernetes_writes_unanswered",
            "1 while the Kubernetes API server leaves pod creates/deletes unanswered (they "
            "hang or time out: its storage, etcd, may be stuck), else 0.",
            registry=self.registry,
        )
        gauge.set_function(lambda: 1.0 if unanswered() else 0.0)


class FlinkMetrics:
    """The Flink follower's metrics; registered only when ``rmd.flink.rest-url`` is set."""

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self._reachable = Gauge(
            "rmd_flink_rest_reachable",
            "1 while the Flink JobManager's REST API answers, else 0.",
            registry=registry,
        )
        self._poll_failures = Counter(
            "rmd_flink_poll_failures",
            "Polls of Flink's REST API that could not read everything, by reason.",
            ["reason"],
            registry=registry,
        )
        self._job_problems = Counter(
            "rmd_flink_job_problems",
            "Bad input from Flink about a job (demand above the slot cap, unknown scheduler "
            "answers, malformed answers), by reason; each reported once per job.",
            ["reason"],
            registry=registry,
        )
        self._jobs_followed = Gauge(
            "rmd_flink_jobs_followed",
            "Flink jobs whose slot demand rmd declared from the REST API.",
            registry=registry,
        )
        self._taskmanagers = Gauge(
            "rmd_flink_taskmanagers",
            "TaskManagers as Flink's REST API shows them: rmd's busy or idle ones, and "
            "unmanaged ones (not started by rmd).",
            ["usage"],
            registry=registry,
        )
        for failure in FailureReason:
            self._poll_failures.labels(reason=failure.value)
        for problem in ProblemReason:
            self._job_problems.labels(reason=problem.value)
        self.taskmanagers(busy=0, idle=0, unmanaged=0)

    def poll_failed(self, *, reason: str) -> None:
        self._poll_failures.labels(reason=reason).inc()

    def job_problem(self, *, reason: str) -> None:
        self._job_problems.labels(reason=reason).inc()

    def rest_reachable(self, reachable: bool) -> None:
        self._reachable.set(1 if reachable else 0)

    def jobs_followed(self, count: int) -> None:
        self._jobs_followed.set(count)

    def taskmanagers(self, *, busy: int, idle: int, unmanaged: int) -> None:
        self._taskmanagers.labels(usage="busy").set(busy)
        self._taskmanagers.labels(usage="idle").set(idle)
        self._taskmanagers.labels(usage="unmanaged").set(unmanaged)


class ReporterMetrics:
    """What the daemon writes for kubectl: the pods' state label and Kubernetes Events."""

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self._label_patches = Counter(
            "rmd_pod_state_label_patches",
            "Patches of the rmd.dev/state label of TaskManager pods, by result (written, "
            "failed: retried while still wanted, gone: the pod no longer existed).",
            ["result"],
            registry=registry,
        )
        self._events_written = Counter(
            "rmd_kubernetes_events_written",
            "Kubernetes Events written: create (a new Event) or patch (count of a known one).",
            ["write"],
            registry=registry,
        )
        self._events_dropped = Counter(
            "rmd_kubernetes_events_dropped",
            "Kubernetes Event writes dropped, by reason (the API server was unavailable, "
            "refused them, or too many waited); they are not retried.",
            ["reason"],
            registry=registry,
        )
        for result in ("written", "failed", "gone"):
            self._label_patches.labels(result=result)
        for write in ("create", "patch"):
            self._events_written.labels(write=write)

    def label_patch(self, result: str) -> None:
        self._label_patches.labels(result=result).inc()

    def event_written(self, write: str) -> None:
        self._events_written.labels(write=write).inc()

    def event_dropped(self, reason: str) -> None:
        self._events_dropped.labels(reason=reason).inc()
