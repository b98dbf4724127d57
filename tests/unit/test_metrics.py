"""Prometheus metrics: gauges from the allocator's status at scrape time, counters, histograms."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rmd.core.allocator import Allocator, AllocatorSettings
from rmd.core.clock import ManualClock
from rmd.core.model import (
    LossReason,
    PodObservation,
    PodProblem,
    SlotsAllocated,
    SlotsFreed,
    StartFailure,
    StartsThrottled,
    TaskManagerChanged,
    TaskManagerLost,
    TaskManagerRegistered,
    TaskManagerState,
)
from rmd.metrics import RmdMetrics


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def allocator(clock: ManualClock) -> Allocator:
    settings = AllocatorSettings(cluster_id="flink-1", slots_per_taskmanager=2)
    return Allocator(settings, clock=clock)


@pytest.fixture
def metrics(allocator: Allocator) -> RmdMetrics:
    return RmdMetrics(registry=CollectorRegistry(), status=allocator.status)


def value(metrics: RmdMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_flink_gauges_follow_the_allocator_without_any_update(
    metrics: RmdMetrics, allocator: Allocator
) -> None:
    assert value(metrics, "rmd_num_pending_taskmanagers") == 0

    allocator.declare("j1", 3)  # two pods requested
    [first, _second] = [tm.taskmanager_id for tm in allocator.taskmanager_views()]
    allocator.create_succeeded(first)
    allocator.register(first, address="10.0.0.1:6122", slots=2)

    assert value(metrics, "rmd_num_registered_taskmanagers") == 1
    assert value(metrics, "rmd_num_pending_taskmanagers") == 1  # requested + pending
    assert value(metrics, "rmd_task_slots") == 2
    assert value(metrics, "rmd_task_slots_available") == 0
    assert value(metrics, "rmd_taskmanagers", state="registered") == 1
    assert value(metrics, "rmd_taskmanagers", state="requested") == 1
    assert value(metrics, "rmd_taskmanagers", state="pending") == 0
    assert value(metrics, "rmd_taskmanagers", state="releasing") == 0
    assert value(metrics, "rmd_jobs") == 1
    assert value(metrics, "rmd_pending_slot_demand") == 1
    assert value(metrics, "rmd_starts_throttled") == 0

    allocator.remove_job("j1")

    assert value(metrics, "rmd_jobs") == 0
    assert value(metrics, "rmd_task_slots_available") == 2
    assert value(metrics, "rmd_pending_slot_demand") == 0
    assert value(metrics, "rmd_num_pending_taskmanagers") == 0  # the second pod was cancelled


def test_throttle_gauge_shows_the_start_failure_limit(clock: ManualClock) -> None:
    settings = AllocatorSettings(
        cluster_id="flink-1", slots_per_taskmanager=1, max_start_failures_per_minute=2
    )
    allocator = Allocator(settings, clock=clock)
    metrics = RmdMetrics(registry=CollectorRegistry(), status=allocator.status)
    allocator.declare("j1", 5)
    for tm in allocator.taskmanager_views()[:2]:
        allocator.create_failed(tm.taskmanager_id, reason="Forbidden", message="quota")

    assert allocator.status().starts_throttled_until is not None
    assert value(metrics, "rmd_starts_throttled") == 1


def test_notices_feed_counters_and_histograms(metrics: RmdMetrics) -> None:
    metrics.observe(SlotsAllocated("j1", ("tm-1/0", "tm-1/1"), waited_seconds=(0.02, 7.0)))
    metrics.observe(TaskManagerRegistered("tm-1", startup_seconds=4.0))
    metrics.observe(TaskManagerLost("tm-2", LossReason.POD_DELETED, was_registered=True))
    metrics.observe(TaskManagerLost("tm-3", LossReason.POD_DELETED, was_registered=False))
    metrics.observe(StartFailure("tm-3", reason="died before registering"))
    metrics.observe(PodProblem("tm-4", reason="ImagePullBackOff", message="nope"))
    metrics.observe(StartsThrottled(failures_in_window=10, until=1003.0))
    metrics.observe(SlotsFreed("j1", ("tm-1/0",), reason="job removed"))
    metrics.observe(
        TaskManagerChanged("tm-1", TaskManagerState.PENDING, TaskManagerState.REGISTERED, "r")
    )

    assert value(metrics, "rmd_slot_allocation_seconds_count") == 2
    assert value(metrics, "rmd_slot_allocation_seconds_sum") == pytest.approx(7.02)
    assert value(metrics, "rmd_slot_allocation_seconds_bucket", le="0.05") == 1
    assert value(metrics, "rmd_slot_allocation_seconds_bucket", le="10.0") == 2
    assert value(metrics, "rmd_taskmanager_startup_seconds_count") == 1
    assert value(metrics, "rmd_taskmanager_startup_seconds_bucket", le="2.5") == 0
    assert value(metrics, "rmd_taskmanager_startup_seconds_bucket", le="5.0") == 1
    assert value(metrics, "rmd_taskmanagers_lost_total", reason="pod-deleted") == 2
    assert value(metrics, "rmd_taskmanagers_lost_total", reason="pod-failed") == 0
    assert value(metrics, "rmd_start_failures_total") == 1
    assert value(metrics, "rmd_pod_problems_total", reason="ImagePullBackOff") == 1
    assert value(metrics, "rmd_pod_problems_total", reason="Unschedulable") == 0
    assert value(metrics, "rmd_start_throttle_trips_total") == 1


def test_edge_counters(metrics: RmdMetrics) -> None:
    metrics.pod_created()
    metrics.pod_created()
    metrics.pod_deleted(reason="idle")
    metrics.api_error(status=429)
    metrics.api_error(status=0)
    metrics.api_error(status=0)
    metrics.watch_restarted(reason="expired")

    assert value(metrics, "rmd_pods_created_total") == 2
    assert value(metrics, "rmd_pods_deleted_total", reason="idle") == 1
    assert value(metrics, "rmd_pods_deleted_total", reason="excess") == 0  # pre-created
    assert value(metrics, "rmd_kubernetes_api_errors_total", code="429") == 1
    assert value(metrics, "rmd_kubernetes_api_errors_total", code="0") == 2
    assert value(metrics, "rmd_watch_restarts_total", reason="expired") == 1


def test_relists_count_every_list_after_the_first(metrics: RmdMetrics) -> None:
    metrics.watch_listed()
    assert value(metrics, "rmd_watch_relists_total") == 0
    metrics.watch_listed()
    metrics.watch_listed()
    assert value(metrics, "rmd_watch_relists_total") == 2


def test_api_requests_are_a_histogram_by_verb_and_result(metrics: RmdMetrics) -> None:
    name = "rmd_kubernetes_api_request_duration_seconds"
    assert value(metrics, f"{name}_count", verb="create", result="no-answer") == 0  # pre-created

    metrics.api_request("create", "success", 0.02)
    metrics.api_request("create", "success", 0.3)
    metrics.api_request("delete", "server-error", 1.5)

    assert value(metrics, f"{name}_count", verb="create", result="success") == 2
    assert value(metrics, f"{name}_bucket", verb="create", result="success", le="0.025") == 1
    assert value(metrics, f"{name}_sum", verb="delete", result="server-error") == 1.5


def test_waiting_jobs_and_pending_reasons_are_read_at_scrape_time(
    metrics: RmdMetrics, allocator: Allocator, clock: ManualClock
) -> None:
    assert value(metrics, "rmd_jobs_waiting") == 0
    assert value(metrics, "rmd_job_oldest_wait_seconds") == 0
    assert value(metrics, "rmd_pending_taskmanagers", reason="image-pull") == 0

    allocator.declare("j1", 4)  # two pods of two slots
    clock.advance(12)

    assert value(metrics, "rmd_jobs_waiting") == 1
    assert value(metrics, "rmd_job_oldest_wait_seconds") == 12
    assert value(metrics, "rmd_pending_taskmanagers", reason="creating") == 2

    [first, second] = [tm.taskmanager_id for tm in allocator.taskmanager_views()]
    allocator.create_succeeded(first)
    allocator.create_succeeded(second)
    allocator.pod_observed(
        PodObservation(first, node_name="n1", waiting_problem=("ErrImagePull", "not found"))
    )

    assert value(metrics, "rmd_pending_taskmanagers", reason="creating") == 0
    assert value(metrics, "rmd_pending_taskmanagers", reason="image-pull") == 1
    assert value(metrics, "rmd_pending_taskmanagers", reason="scheduling") == 1


def test_process_platform_and_gc_collectors_are_in_the_registry(metrics: RmdMetrics) -> None:
    text = generate_latest(metrics.registry).decode()

    assert "process_cpu_seconds_total" in text
    assert "python_info" in text
    assert "python_gc_objects_collected_total" in text


def test_two_daemons_in_one_process_do_not_clash(allocator: Allocator) -> None:
    first = RmdMetrics(registry=CollectorRegistry(), status=allocator.status)
    second = RmdMetrics(registry=CollectorRegistry(), status=allocator.status)
    first.pod_created()

    assert value(first, "rmd_pods_created_total") == 1
    assert value(second, "rmd_pods_created_total") == 0


async def test_asyncio_tasks_are_counted_at_scrape_time(metrics: RmdMetrics) -> None:
    loop = asyncio.get_running_loop()
    metrics.count_tasks_of(loop)
    before = value(metrics, "rmd_asyncio_tasks")
    assert before == len(asyncio.all_tasks(loop))
    release = asyncio.Event()
    waiting = [asyncio.create_task(release.wait()) for _ in range(3)]
    assert value(metrics, "rmd_asyncio_tasks") == before + 3
    release.set()
    await asyncio.gather(*waiting)
    assert value(metrics, "rmd_asyncio_tasks") == before
