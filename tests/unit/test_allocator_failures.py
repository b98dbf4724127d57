"""Things going wrong: timeouts, lost pods, failed creates, the failure limit, pod problems."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rmd.core.model import (
    Action,
    LossReason,
    PodObservation,
    PodProblem,
    ProblemView,
    ReleaseReason,
    SlotsAllocated,
    SlotsFreed,
    StartFailure,
    StartsThrottled,
    TaskManagerLost,
    TaskManagerState,
)
from tests.unit.allocator_harness import Harness, created, deleted, of_type, running, tm_name

RELEASING = TaskManagerState.RELEASING


# ---------------------------------------------------------------------------- registration timeout


def test_registration_timeout_deletes_counts_a_failure_and_replaces() -> None:
    h = Harness(registration_timeout=300.0)
    h.allocator.declare("j1", 4)
    h.allocator.create_succeeded(tm_name(1))
    assert h.allocator.next_deadline() == pytest.approx(h.now + 300.0)
    assert h.advance(299.9) == []
    actions = h.advance(0.1)
    assert deleted(actions) == {tm_name(1): ReleaseReason.REGISTRATION_TIMEOUT}
    assert of_type(actions, TaskManagerLost) == [
        TaskManagerLost(tm_name(1), LossReason.REGISTRATION_TIMEOUT, False, ())
    ]
    failures = of_type(actions, StartFailure)
    assert [f.taskmanager_id for f in failures] == [tm_name(1)]
    assert "300" in failures[0].reason
    assert created(actions) == [tm_name(2)]
    assert h.state(tm_name(1)) is RELEASING


def test_requested_pod_that_never_confirms_also_times_out() -> None:
    h = Harness(registration_timeout=60.0)
    h.allocator.declare("j1", 1)
    actions = h.advance(60.0)
    # The create is still in flight: the delete is sent when it lands (a delete sent now
    # could 404 before the pod exists and leak it).
    assert deleted(actions) == {}
    assert h.states()[tm_name(1)] is TaskManagerState.RELEASING
    late = h.allocator.create_succeeded(tm_name(1))
    assert deleted(late) == {tm_name(1): ReleaseReason.REGISTRATION_TIMEOUT}


def test_a_cancelled_pod_whose_create_fails_is_just_forgotten() -> None:
    h = Harness(slots_per_taskmanager=1)
    names = created(h.allocator.declare("j1", 2))
    h.allocator.declare("j1", 1)  # one of them is cancelled while its create is in flight
    cancelled = [n for n, s in h.states().items() if s is TaskManagerState.RELEASING]
    assert len(cancelled) == 1
    actions = h.allocator.create_failed(cancelled[0], reason="Timeout", message="gave up")
    assert deleted(actions) == {}
    assert not h.allocator.is_known_pod(cancelled[0])
    assert set(h.states()) == set(names) - set(cancelled)


def test_a_cancelled_pod_seen_by_the_watch_first_is_deleted_once() -> None:
    h = Harness(slots_per_taskmanager=1)
    (name,) = created(h.allocator.declare("j1", 1))
    h.allocator.declare("j1", 0)
    assert deleted(h.allocator.pod_observed(running(name))) == {name: ReleaseReason.EXCESS}
    assert deleted(h.allocator.create_succeeded(name)) == {}  # not a second time


def test_resync_does_not_judge_pods_confirmed_after_the_list_was_sent() -> None:
    h = Harness(slots_per_taskmanager=1)
    (name,) = created(h.allocator.declare("j1", 1))
    listed_at = h.now
    h.clock.advance(1.0)
    h.allocator.create_succeeded(name)  # answered after the LIST was sent
    assert of_type(h.allocator.resync([], listed_at=listed_at), TaskManagerLost) == []
    assert h.states()[name] is TaskManagerState.PENDING
    # A LIST sent after the pod was known to exist is believed.
    lost = of_type(h.allocator.resync([], listed_at=h.now), TaskManagerLost)
    assert [(t.taskmanager_id, t.reason) for t in lost] == [(name, LossReason.POD_MISSING)]


def test_resync_sends_the_delete_again_for_a_releasing_pod_still_listed() -> None:
    h = Harness(slots_per_taskmanager=1, idle_timeout=5.0)
    h.scale_up("j1", 1)
    h.allocator.declare("j1", 0)
    first = h.advance(5.0)
    assert deleted(first) == {tm_name(1): ReleaseReason.IDLE}
    # The delete was lost (e.g. it failed for good): the next LIST still shows the pod.
    again = h.allocator.resync([running(tm_name(1))])
    assert deleted(again) == {tm_name(1): ReleaseReason.IDLE}


def test_registering_just_in_time_stops_the_registration_timer() -> None:
    h = Harness(registration_timeout=60.0, heartbeat_timeout=50.0)
    h.allocator.declare("j1", 1)
    h.clock.advance(59.9)
    h.start([tm_name(1)])
    assert h.allocator.next_deadline() == pytest.approx(h.now + 50.0)
    assert h.advance(0.2) == []


# ---------------------------------------------------------------------------- heartbeat timeout


def test_heartbeat_timeout_returns_slots_and_replaces_the_taskmanager() -> None:
    h = Harness(heartbeat_timeout=50.0)
    h.scale_up("j1", 4)
    h.clock.advance(40)
    assert h.allocator.heartbeat(tm_name(1)) == []
    assert h.advance(49.9) == []
    actions = h.advance(0.1)
    assert deleted(actions) == {tm_name(1): ReleaseReason.HEARTBEAT_TIMEOUT}
    lost = of_type(actions, TaskManagerLost)
    assert lost == [TaskManagerLost(tm_name(1), LossReason.HEARTBEAT_TIMEOUT, True, ("j1",))]
    assert of_type(actions, StartFailure) == []  # it had started fine
    assert len(of_type(actions, SlotsFreed)[0].slot_ids) == 4
    assert created(actions) == [tm_name(2)]
    view = h.allocator.job_view("j1")
    assert view.slots_allocated == 0
    # The replacement's slots show how long the demand waited since the loss.
    h.clock.advance(6)
    replaced = h.start([tm_name(2)])
    assert of_type(replaced, SlotsAllocated)[0].waited_seconds == (6.0,) * 4


def test_registration_counts_as_a_heartbeat() -> None:
    h = Harness(heartbeat_timeout=50.0, idle_timeout=1000.0)
    h.scale_up("j1", 4)
    assert h.allocator.next_deadline() == pytest.approx(h.now + 50.0)


# ---------------------------------------------------------------------------- pods lost


def test_pod_deleted_while_pending_is_no_start_failure_and_gets_replaced() -> None:
    h = Harness()
    h.allocator.declare("j1", 4)
    h.allocator.create_succeeded(tm_name(1))
    actions = h.allocator.pod_deleted(tm_name(1))
    assert of_type(actions, TaskManagerLost) == [
        TaskManagerLost(tm_name(1), LossReason.POD_DELETED, False, ())
    ]
    assert of_type(actions, StartFailure) == []  # deleted (kubectl delete pod): not its fault
    assert deleted(actions) == {}
    assert created(actions) == [tm_name(2)]
    assert not h.allocator.is_known_pod(tm_name(1))


@pytest.mark.parametrize(
    "delete",
    [
        pytest.param(lambda h, name: h.allocator.pod_deleted(name), id="DELETED event"),
        pytest.param(
            lambda h, name: h.allocator.pod_observed(
                PodObservation(name, phase="Pending", node_name="n", deleting=True)
            ),
            id="deletionTimestamp",
        ),
        pytest.param(
            lambda h, name: h.allocator.resync([], listed_at=h.now), id="missing from a LIST"
        ),
    ],
)
def test_deleting_unregistered_taskmanagers_never_trips_the_start_failure_limit(
    delete: Callable[[Harness, str], list[Action]],
) -> None:
    """A user deleting pending pods one after another: each is replaced, none is a failed
    start, so the limit (2 per minute here) never pauses the replacements."""
    h = Harness(slots_per_taskmanager=4, max_start_failures_per_minute=2)
    (name,) = created(h.allocator.declare("j1", 4))
    for _ in range(5):
        h.allocator.create_succeeded(name)
        h.clock.advance(1.0)
        actions = delete(h, name)
        assert of_type(actions, StartFailure) == []
        assert of_type(actions, StartsThrottled) == []
        (name,) = created(actions)
    assert h.allocator.status().extra["start_failures_last_minute"] == 0
    assert h.allocator.job_view("j1").unfulfilled_reason is None


def test_lowering_demand_for_pods_on_their_way_counts_no_start_failure() -> None:
    """The JobMaster scales down before the pods registered: they are cancelled and deleted,
    their agents say goodbye, their pods go — none of it is a failed start."""
    h = Harness(slots_per_taskmanager=1, max_start_failures_per_minute=1)
    names = created(h.allocator.declare("j1", 3))
    everything: list[Action] = []
    for name in names:
        everything += h.allocator.create_succeeded(name)
        everything += h.allocator.pod_observed(running(name))
    everything += h.allocator.declare("j1", 0)
    assert set(deleted(everything)) == set(names)
    for name in names:
        everything += h.allocator.deregister(name)  # the agent stops on SIGTERM
        everything += h.allocator.pod_observed(
            PodObservation(name, phase="Running", node_name="node-1", deleting=True)
        )
        everything += h.allocator.pod_deleted(name)
    assert of_type(everything, StartFailure) == []
    assert h.allocator.status().extra["start_failures_last_minute"] == 0
    assert h.states() == {}


def test_pod_deleted_while_registered_returns_slots_without_start_failure() -> None:
    h = Harness()
    h.scale_up("a", 3)
    h.allocator.declare("b", 1)
    actions = h.allocator.pod_deleted(tm_name(1))
    lost = of_type(actions, TaskManagerLost)
    assert lost == [TaskManagerLost(tm_name(1), LossReason.POD_DELETED, True, ("a", "b"))]
    assert of_type(actions, StartFailure) == []
    assert {f.job_id: len(f.slot_ids) for f in of_type(actions, SlotsFreed)} == {"a": 3, "b": 1}
    assert created(actions) == [tm_name(2)]
    assert h.allocator.status().pending_slot_demand == 4


def test_pod_being_deleted_from_outside_is_lost_at_once_and_replaced() -> None:
    h = Harness()
    h.scale_up("a", 4)
    going = PodObservation(tm_name(1), phase="Running", node_name="n", deleting=True)
    actions = h.allocator.pod_observed(going)
    assert of_type(actions, TaskManagerLost) == [
        TaskManagerLost(tm_name(1), LossReason.POD_DELETED, True, ("a",))
    ]
    assert deleted(actions) == {}  # it is being deleted already
    assert created(actions) == [tm_name(2)]
    assert h.allocator.taskmanager_view(tm_name(1)).state is TaskManagerState.RELEASING
    # The agent's goodbye during the grace period and the final DELETED change nothing more.
    assert h.allocator.deregister(tm_name(1)) == []
    gone = h.allocator.pod_deleted(tm_name(1))
    assert of_type(gone, TaskManagerLost) == []
    assert created(gone) == []
    assert not h.allocator.is_known_pod(tm_name(1))


@pytest.mark.parametrize(
    ("pod", "loss"),
    [
        (PodObservation(tm_name(1), phase="Failed", node_name="n"), LossReason.POD_FAILED),
        (PodObservation(tm_name(1), phase="Succeeded", node_name="n"), LossReason.POD_FAILED),
        (
            PodObservation(tm_name(1), phase="Running", node_name="n", terminated_exit_code=137),
            LossReason.CONTAINER_TERMINATED,
        ),
    ],
)
def test_finished_pod_is_lost_and_cleaned_up(pod: PodObservation, loss: LossReason) -> None:
    h = Harness()
    h.scale_up("j1", 4)
    actions = h.allocator.pod_observed(pod)
    assert deleted(actions) == {tm_name(1): ReleaseReason.FAILED}
    assert of_type(actions, TaskManagerLost) == [TaskManagerLost(tm_name(1), loss, True, ("j1",))]
    assert created(actions) == [tm_name(2)]
    assert h.state(tm_name(1)) is RELEASING
    assert h.allocator.pod_observed(pod) == []  # seen again while being deleted: nothing
    h.allocator.pod_deleted(tm_name(1))
    assert not h.allocator.is_known_pod(tm_name(1))


def test_pod_dying_before_registration_is_a_start_failure() -> None:
    h = Harness()
    h.allocator.declare("j1", 4)
    crashed = PodObservation(tm_name(1), phase="Running", node_name="n", terminated_exit_code=1)
    actions = h.allocator.pod_observed(crashed)
    assert "exit code 1" in of_type(actions, StartFailure)[0].reason
    assert created(actions) == [tm_name(2)]


def test_pod_deleted_for_a_released_taskmanager_just_forgets_it() -> None:
    h = Harness(idle_timeout=1.0)
    h.scale_up("j1", 4)
    h.allocator.declare("j1", 0)
    h.advance(1.0)
    actions = h.allocator.pod_deleted(tm_name(1))
    assert of_type(actions, TaskManagerLost) == []
    assert created(actions) == []
    assert h.allocator.pod_deleted(tm_name(1)) == []  # twice, or a delete 404: harmless


# ---------------------------------------------------------------------------- create failed


def test_create_failed_counts_a_failure_and_retries() -> None:
    h = Harness()
    h.allocator.declare("j1", 4)
    actions = h.allocator.create_failed(tm_name(1), reason="Forbidden", message="quota exceeded")
    assert of_type(actions, TaskManagerLost) == [
        TaskManagerLost(tm_name(1), LossReason.CREATE_FAILED, False, ())
    ]
    assert "quota exceeded" in of_type(actions, StartFailure)[0].reason
    assert created(actions) == [tm_name(2)]
    assert not h.allocator.is_known_pod(tm_name(1))
    view = h.allocator.job_view("j1")
    assert ProblemView(tm_name(1), "Forbidden", "quota exceeded") in view.problems
    assert "quota exceeded" in (view.unfulfilled_reason or "")
    h.clock.advance(60)
    assert h.allocator.job_view("j1").problems == ()  # an old failure is not news


def test_create_failed_for_a_cancelled_pod_is_no_start_failure() -> None:
    h = Harness()
    h.allocator.declare("j1", 4)
    h.allocator.declare("j1", 0)
    actions = h.allocator.create_failed(tm_name(1), reason="Conflict", message="x")
    assert of_type(actions, StartFailure) == []
    assert not h.allocator.is_known_pod(tm_name(1))


def test_create_result_for_an_unknown_pod_is_ignored() -> None:
    h = Harness()
    assert h.allocator.create_failed("nope", reason="x", message="y") == []
    assert h.allocator.create_succeeded("nope") == []


# ---------------------------------------------------------------------------- rate limit


def fail_every_create(h: Harness, actions: list[Action]) -> tuple[list[Action], int]:
    """Answer every CreatePod in ``actions`` (and in what that causes) with a failure."""
    everything: list[Action] = []
    creates = 0
    queue = list(actions)
    while queue:
        action = queue.pop(0)
        everything.append(action)
        for name in created([action]):
            creates += 1
            queue += h.allocator.create_failed(name, reason="Forbidden", message="quota")
    return everything, creates


def test_failure_limit_trips_once_and_pauses_for_retry_interval() -> None:
    h = Harness(slots_per_taskmanager=1, max_start_failures_per_minute=10, start_retry_interval=3)
    actions, creates = fail_every_create(h, h.allocator.declare("j1", 1))
    throttled = of_type(actions, StartsThrottled)
    assert len(throttled) == 1
    assert throttled[0].failures_in_window == 10
    assert throttled[0].until == pytest.approx(h.clock.wall() + 3.0)
    assert creates == 10
    status = h.allocator.status()
    assert status.starts_throttled_until == pytest.approx(h.clock.wall() + 3.0)
    assert status.extra["start_failures_last_minute"] == 10
    reason = h.allocator.job_view("j1").unfulfilled_reason or ""
    assert "resourcemanager.start-worker.max-failure-rate = 10" in reason
    assert h.allocator.next_deadline() == pytest.approx(h.now + 3.0)
    assert h.advance(2.9) == []
    resumed = h.advance(0.1)
    assert created(resumed) == []  # the pause is over, but the trailing minute is still full
    assert h.allocator.status().starts_throttled_until is None
    assert h.allocator.next_deadline() == pytest.approx(h.now + 57.0)
    assert created(h.advance(57.0)) == [tm_name(11)]  # the failures left the window


def test_with_every_pod_crashing_creates_per_minute_stay_near_the_limit() -> None:
    limit = 10
    h = Harness(
        slots_per_taskmanager=1,
        max_start_failures_per_minute=limit,
        start_retry_interval=3,
        registration_timeout=300,
    )
    create_times: list[float] = []
    pending: list[str] = []

    def handle(actions: list[Action]) -> None:
        for name in created(actions):
            create_times.append(h.now)
            pending.append(name)

    handle(h.allocator.declare("j1", 20))
    initial_burst = len(create_times)
    assert initial_burst == 20
    for _ in range(2400):  # 20 minutes in 0.5 s steps; each pod crashes after ~2 s
        h.clock.advance(0.5)
        handle(h.allocator.tick())
        crashing, pending[:] = pending[:4], pending[4:]
        for name in crashing:
            pod = PodObservation(name, phase="Failed", node_name="n")
            handle(h.allocator.pod_observed(pod))
            handle(h.allocator.pod_deleted(name))
    in_any_minute = max(
        sum(1 for t in create_times if start <= t < start + 60) for start in create_times
    )
    # The burst and the replacements before the limit trips; nothing beyond the limit after.
    assert in_any_minute <= initial_burst + limit
    after_first_minute = [t for t in create_times if t >= create_times[0] + 60]
    worst_later = max(
        sum(1 for t in after_first_minute if start <= t < start + 60)
        for start in after_first_minute
    )
    assert worst_later <= limit
    assert len(after_first_minute) >= 5  # it does keep trying


def test_a_successful_registration_restores_full_speed() -> None:
    h = Harness(slots_per_taskmanager=1, max_start_failures_per_minute=2, start_retry_interval=3)
    fail_every_create(h, h.allocator.declare("j1", 1))
    assert created(h.advance(3)) == []  # the pause ends; the failures are still in the window
    assert created(h.advance(57)) == [tm_name(3)]  # they left it: one pod may start
    h.start([tm_name(3)])
    assert len(created(h.allocator.declare("j1", 6))) == 5


# ---------------------------------------------------------------------------- pod problems


def image_problem(name: str, reason: str = "ImagePullBackOff") -> PodObservation:
    return PodObservation(
        name, phase="Pending", node_name="n1", waiting_problem=(reason, "image x not found")
    )


def test_pod_problem_is_reported_once_per_reason_and_shown_in_views() -> None:
    h = Harness()
    h.allocator.declare("j1", 4)
    name = tm_name(1)
    first = h.allocator.pod_observed(image_problem(name, "ErrImagePull"))
    assert of_type(first, PodProblem) == [PodProblem(name, "ErrImagePull", "image x not found")]
    assert of_type(h.allocator.pod_observed(image_problem(name, "ErrImagePull")), PodProblem) == []
    backoff = h.allocator.pod_observed(image_problem(name))
    assert [p.reason for p in of_type(backoff, PodProblem)] == ["ImagePullBackOff"]
    assert of_type(h.allocator.pod_observed(image_problem(name, "ErrImagePull")), PodProblem) == []
    expected = ProblemView(name, "ErrImagePull", "image x not found")
    assert h.allocator.taskmanager_view(name).problem == expected
    view = h.allocator.job_view("j1")
    assert view.problems == (expected,)
    assert "ErrImagePull" in (view.unfulfilled_reason or "")
    h.allocator.pod_observed(running(name))
    assert h.allocator.taskmanager_view(name).problem is None
    assert h.allocator.job_view("j1").problems == ()


def test_unschedulable_pod_is_a_problem() -> None:
    h = Harness()
    h.allocator.declare("j1", 4)
    pod = PodObservation(tm_name(1), unschedulable_message="0/3 nodes are available")
    actions = h.allocator.pod_observed(pod)
    assert of_type(actions, PodProblem) == [
        PodProblem(tm_name(1), "Unschedulable", "0/3 nodes are available")
    ]


def test_stuck_image_pull_times_out_as_a_start_failure() -> None:
    h = Harness(registration_timeout=300, max_start_failures_per_minute=1)
    h.allocator.declare("j1", 4)
    h.allocator.pod_observed(image_problem(tm_name(1)))
    actions = h.advance(300)
    failure = of_type(actions, StartFailure)[0]
    assert "ImagePullBackOff" in failure.reason
    assert len(of_type(actions, StartsThrottled)) == 1  # Flink's never trips: ours does


def test_fulfilled_jobs_do_not_show_other_pods_problems() -> None:
    h = Harness()
    h.scale_up("a", 4)
    h.allocator.declare("b", 4)
    h.allocator.pod_observed(image_problem(tm_name(2)))
    assert h.allocator.job_view("a").problems == ()
    assert h.allocator.job_view("a").unfulfilled_reason is None
    assert len(h.allocator.job_view("b").problems) == 1
