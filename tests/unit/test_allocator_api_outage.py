"""The API server unreachable: a create that could not get through is not the pod's fault.

It counts no start failure and loses no TaskManager; the same create (same name) is sent
again after a backoff of 1 s growing to 10 s, so an outage neither trips the start-failure
limit nor delays recovery by the limit's minute, and never leaves a second pod behind.
"""

from __future__ import annotations

import random

import pytest

from rmd.core.allocator import Allocator
from rmd.core.model import (
    Action,
    CreateRetryScheduled,
    DeletePod,
    LossReason,
    PodObservation,
    ReleaseReason,
    StartFailure,
    StartsThrottled,
    TaskManagerLost,
    TaskManagerState,
)
from tests.unit.allocator_harness import Harness, created, deleted, of_type, running, tm_name

REQUESTED = TaskManagerState.REQUESTED


def api_down(h: Harness, name: str) -> list[Action]:
    return h.allocator.create_failed(
        name, reason="ConnectionError", message="connection refused", api_unavailable=True
    )


def test_a_create_the_api_server_could_not_take_is_sent_again_under_the_same_name() -> None:
    h = Harness()
    (name,) = created(h.allocator.declare("j1", 4))
    failed_at = h.now
    actions = api_down(h, name)
    assert of_type(actions, StartFailure) == []
    assert of_type(actions, TaskManagerLost) == []
    assert created(actions) == []  # no second pod for the same demand
    (retry,) = of_type(actions, CreateRetryScheduled)
    assert (retry.taskmanager_id, retry.reason) == (name, "ConnectionError")
    assert 0.5 <= retry.retry_in <= 1.0
    assert h.state(name) is REQUESTED
    assert h.allocator.next_deadline() == pytest.approx(failed_at + retry.retry_in)
    assert h.advance(retry.retry_in - 0.01) == []
    assert created(h.advance(0.02)) == [name]
    h.allocator.create_succeeded(name)
    assert h.state(name) is TaskManagerState.PENDING
    assert h.allocator.status().extra["start_failures_last_minute"] == 0


def test_retries_back_off_from_one_to_ten_seconds() -> None:
    h = Harness()
    (name,) = created(h.allocator.declare("j1", 4))
    delays = []
    for _ in range(7):
        (retry,) = of_type(api_down(h, name), CreateRetryScheduled)
        delays.append(retry.retry_in)
        assert created(h.advance(retry.retry_in)) == [name]
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 10, 10, 10], strict=True):
        assert ceiling / 2 <= delay <= ceiling  # jittered within the upper half


def test_a_30_second_outage_trips_nothing_and_recovery_follows_within_the_backoff() -> None:
    """The reliability issue's case: 20 pods wanted, the API server unreachable for 30 s.
    Before, the failures tripped the limit and creates resumed only when they left the
    minute (32-34 s after the API came back); the job blamed "the failing pods"."""
    h = Harness(slots_per_taskmanager=1, max_start_failures_per_minute=10)
    outage_ends = h.now + 30.0
    sent: list[tuple[float, str]] = []
    everything: list[Action] = []

    def carry_out(actions: list[Action]) -> None:
        everything.extend(actions)
        for name in created(actions):
            sent.append((h.now, name))
            if h.now < outage_ends:
                carry_out(api_down(h, name))
            else:
                carry_out(h.allocator.create_succeeded(name))

    carry_out(h.allocator.declare("j1", 20))
    reason = h.allocator.job_view("j1").unfulfilled_reason or ""
    assert "Kubernetes API server cannot be reached" in reason
    assert "20 TaskManager pod creates wait" in reason
    assert "failing pods" not in reason
    assert "max-failure-rate" not in reason
    while h.allocator.status().taskmanagers["requested"]:
        h.clock.advance(0.1)
        carry_out(h.allocator.tick())
    recovered_after = h.now - outage_ends
    assert of_type(everything, StartFailure) == []
    assert of_type(everything, StartsThrottled) == []
    assert recovered_after <= 10.0 + 0.1  # the longest backoff, not the limit's minute
    names = {name for _, name in sent}
    assert names == {tm_name(i) for i in range(1, 21)}  # the same 20 pods, none more
    per_pod = max(sum(1 for _, n in sent if n == name) for name in names)
    # Bounded: the shortest jittered delays (0.5, 1, 2, 4, then 5 s) give 9 sends in 30 s,
    # and then the one that gets through.
    assert per_pod <= 10
    assert h.allocator.status().taskmanagers["pending"] == 20
    assert h.allocator.job_view("j1").unfulfilled_reason is None


def test_a_create_waiting_for_its_retry_is_just_dropped_when_demand_drops() -> None:
    h = Harness()
    (name,) = created(h.allocator.declare("j1", 4))
    api_down(h, name)
    actions = h.allocator.declare("j1", 0)
    assert deleted(actions) == {}  # nothing was created, nothing in flight
    assert not h.allocator.is_known_pod(name)
    assert h.allocator.next_deadline() is None
    assert created(h.advance(20.0)) == []
    # Had the create got through after all, the watch shows an orphan: it is deleted.
    orphan = h.allocator.pod_observed(running(name))
    assert of_type(orphan, DeletePod) == [DeletePod(name, ReleaseReason.ORPHAN)]


def test_a_create_that_got_through_despite_the_error_is_not_sent_again() -> None:
    h = Harness()
    (name,) = created(h.allocator.declare("j1", 4))
    api_down(h, name)
    h.allocator.pod_observed(running(name))  # the answer was lost, the pod exists
    assert h.state(name) is TaskManagerState.PENDING
    assert created(h.advance(20.0)) == []
    assert h.allocator.job_view("j1").unfulfilled_reason is None


def test_an_agent_registering_proves_its_pod_exists() -> None:
    h = Harness()
    (name,) = created(h.allocator.declare("j1", 4))
    api_down(h, name)
    actions = h.allocator.register(name, address="10.0.0.1:6122", slots=4)
    assert h.state(name) is TaskManagerState.REGISTERED
    assert h.allocator.job_view("j1").fulfilled
    assert created(actions + h.advance(20.0)) == []


def test_no_registration_timeout_while_the_create_waits_for_the_api_server() -> None:
    h = Harness(registration_timeout=5.0)
    (name,) = created(h.allocator.declare("j1", 4))
    everything = api_down(h, name)
    for _ in range(4):  # 1 + 2 + 4 + 8 s of outage: longer than the registration timeout
        (retry,) = of_type(everything[-1:], CreateRetryScheduled)
        actions = h.advance(retry.retry_in)
        assert created(actions) == [name]
        everything = api_down(h, name)
    assert of_type(everything, TaskManagerLost) == []
    resent = h.advance(10.0)
    assert created(resent) == [name]
    h.allocator.create_succeeded(name)
    # The registration timer runs from the create that got through.
    assert h.allocator.next_deadline() == pytest.approx(h.now + 5.0)
    lost = of_type(h.advance(5.0), TaskManagerLost)
    assert [(x.taskmanager_id, x.reason) for x in lost] == [(name, LossReason.REGISTRATION_TIMEOUT)]


def test_a_create_is_not_sent_again_while_pod_starts_are_paused() -> None:
    h = Harness(slots_per_taskmanager=1, max_start_failures_per_minute=2, start_retry_interval=3)
    first, second, third = created(h.allocator.declare("j1", 3))
    api_down(h, third)
    h.allocator.create_failed(first, reason="Forbidden", message="quota")
    tripped = h.allocator.create_failed(second, reason="Forbidden", message="quota")
    assert len(of_type(tripped, StartsThrottled)) == 1
    pause_ends = h.now + 3.0
    assert created(h.advance(1.0)) == []  # the retry is due, the pause holds it
    assert h.allocator.next_deadline() == pytest.approx(pause_ends)
    assert third in created(h.advance(2.0))


def test_the_daemon_chooses_the_jitter_through_an_injected_random_source() -> None:
    def first_delay(seed: int) -> float:
        h = Harness()
        h.allocator = Allocator(h.settings, clock=h.clock, rng=random.Random(seed))
        (name,) = created(h.allocator.declare("j1", 4))
        (retry,) = of_type(api_down(h, name), CreateRetryScheduled)
        return retry.retry_in

    assert first_delay(1) == first_delay(1)
    assert first_delay(1) != first_delay(2)


def test_pods_problems_and_the_outage_are_told_apart() -> None:
    h = Harness(slots_per_taskmanager=1)
    first, second = created(h.allocator.declare("j1", 2))
    h.allocator.pod_observed(
        PodObservation(first, node_name="n1", waiting_problem=("ErrImagePull", "no such image"))
    )
    api_down(h, second)
    view = h.allocator.job_view("j1")
    reason = view.unfulfilled_reason or ""
    assert "API server cannot be reached (ConnectionError: connection refused)" in reason
    assert f"TaskManager pod {first} cannot start: ErrImagePull" in reason
    assert [problem.taskmanager_id for problem in view.problems] == [first]
    assert h.allocator.status().extra["creates_awaiting_retry"] == 1


def test_a_create_left_unanswered_is_named_in_the_jobs_reason() -> None:
    """The API server takes the request and never answers (its storage hangs): after 10 s
    the job's reason says so, and the status counts it; the answer ends it."""
    h = Harness()
    (name,) = created(h.allocator.declare("j1", 4))
    h.advance(9.9)
    assert "no answer" not in (h.allocator.job_view("j1").unfulfilled_reason or "")
    assert h.allocator.status().extra["creates_unanswered"] == 0

    h.advance(0.2)
    reason = h.allocator.job_view("j1").unfulfilled_reason or ""
    assert "1 TaskManager pod create has had no answer from the Kubernetes API server" in reason
    assert "etcd" in reason
    assert h.allocator.status().extra["creates_unanswered"] == 1

    h.allocator.create_succeeded(name)
    assert "no answer" not in (h.allocator.job_view("j1").unfulfilled_reason or "")
    assert h.allocator.status().extra["creates_unanswered"] == 0


def test_a_create_refused_by_the_quota_waits_with_a_reason_naming_the_quota() -> None:
    h = Harness()
    (name,) = created(h.allocator.declare("j1", 4))
    actions = h.allocator.create_failed(
        name,
        reason="QuotaExceeded",
        message="exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2",
        api_unavailable=True,  # as the driver passes PodApiError.pod_not_judged
    )
    assert of_type(actions, StartFailure) == []
    reason = h.allocator.job_view("j1").unfulfilled_reason or ""
    assert reason.startswith("a ResourceQuota of the namespace refuses TaskManager pods")
    assert "raise the quota" in reason
    assert "cannot be reached" not in reason
