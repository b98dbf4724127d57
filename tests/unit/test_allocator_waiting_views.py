"""How long things wait, as the views show it: a TaskManager's creation time, a job's oldest
unmet slot, and why requested or pending TaskManagers are not registered yet."""

from __future__ import annotations

import pytest

from rmd.core.model import PodObservation
from rmd.core.views import PENDING_REASONS
from tests.unit.allocator_harness import Harness, created, running, tm_name


def by_reason(h: Harness) -> dict[str, int]:
    return {reason: count for reason, count in h.allocator.status().pending_by_reason.items()}


def test_created_at_is_the_wall_time_of_the_create() -> None:
    h = Harness(slots_per_taskmanager=2)
    sent = h.clock.wall()
    [name] = created(h.allocator.declare("j1", 2))
    h.advance(30)

    view = h.allocator.taskmanager_view(name)

    assert view.created_at == pytest.approx(sent)
    assert h.allocator.taskmanager_views()[0].created_at == pytest.approx(sent)


def test_a_job_waits_since_its_oldest_unmet_slot_and_stops_waiting_when_fulfilled() -> None:
    h = Harness(slots_per_taskmanager=2)
    first_declared = h.clock.wall()
    [first] = created(h.allocator.declare("j1", 2))
    h.advance(10)
    created(h.allocator.declare("j1", 4))  # two more slots wait from now
    h.advance(5)

    assert h.allocator.job_view("j1").waiting_since == pytest.approx(first_declared)
    status = h.allocator.status()
    assert status.jobs_waiting == 1
    assert status.oldest_wait_seconds == pytest.approx(15)

    h.start([first])  # the two oldest slots are allocated; the newer two still wait

    assert h.allocator.job_view("j1").waiting_since == pytest.approx(first_declared + 10)
    assert h.allocator.status().oldest_wait_seconds == pytest.approx(5)

    h.allocator.declare("j1", 2)

    assert h.allocator.job_view("j1").waiting_since is None
    assert h.allocator.status().jobs_waiting == 0
    assert h.allocator.status().oldest_wait_seconds == 0


def test_pending_taskmanagers_by_reason_follow_their_pods() -> None:
    h = Harness(slots_per_taskmanager=1)
    names = created(h.allocator.declare("j1", 6))
    assert set(by_reason(h)) == set(PENDING_REASONS)
    assert by_reason(h)["creating"] == 6

    retry, scheduling, unschedulable, image, starting, registered = names
    h.allocator.create_failed(
        retry, reason="ConnectionError", message="refused", api_unavailable=True
    )
    for name in names[1:]:
        h.allocator.create_succeeded(name)
    h.allocator.pod_observed(PodObservation(scheduling))
    h.allocator.pod_observed(
        PodObservation(unschedulable, unschedulable_message="0/3 nodes are available")
    )
    h.allocator.pod_observed(
        PodObservation(
            image, node_name="n1", waiting_problem=("ImagePullBackOff", "image x not found")
        )
    )
    h.allocator.pod_observed(running(starting))
    h.start([registered])

    assert by_reason(h) == {
        "creating": 0,
        "create-retry": 1,
        "scheduling": 1,
        "unschedulable": 1,
        "image-pull": 1,
        "container-problem": 0,
        "starting": 1,
    }
    assert sum(by_reason(h).values()) == 5  # the registered one is not pending
    assert tm_name(1) == retry
