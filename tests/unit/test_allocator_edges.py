"""The allocator's conversations with TaskManagers and the pod watch; recovery; views."""

from __future__ import annotations

import pytest

from rmd.core.model import (
    DeletePod,
    LossReason,
    PodObservation,
    RegistrationRefused,
    ReleaseReason,
    SlotCountMismatch,
    SlotsAllocated,
    SlotsFreed,
    SlotView,
    StartFailure,
    TaskManagerChanged,
    TaskManagerLost,
    TaskManagerRegistered,
    TaskManagerState,
    UnknownTaskManager,
)
from tests.unit.allocator_harness import Harness, created, deleted, of_type, running, tm_name

REQUESTED = TaskManagerState.REQUESTED
PENDING = TaskManagerState.PENDING
REGISTERED = TaskManagerState.REGISTERED
RELEASING = TaskManagerState.RELEASING


# ---------------------------------------------------------------------------- registration


def test_unknown_taskmanager_is_refused() -> None:
    h = Harness()
    with pytest.raises(RegistrationRefused, match="was not created by this daemon"):
        h.allocator.register("flink-taskmanager-9-9", address="a:1", slots=4)
    assert h.allocator.taskmanager_views() == []


def test_releasing_taskmanager_is_refused() -> None:
    h = Harness()
    h.allocator.declare("j1", 4)
    h.allocator.declare("j1", 0)  # cancelled
    with pytest.raises(RegistrationRefused, match="is being released"):
        h.allocator.register(tm_name(1), address="a:1", slots=4)
    assert h.state(tm_name(1)) is RELEASING


def test_registration_reports_startup_time_and_fewer_reported_slots_win() -> None:
    h = Harness(slots_per_taskmanager=4)
    h.allocator.declare("j1", 6)
    h.clock.advance(12.5)
    actions = h.allocator.register(tm_name(1), address="10.1.1.1:6122", slots=3)
    assert of_type(actions, TaskManagerRegistered) == [TaskManagerRegistered(tm_name(1), 12.5)]
    assert h.allocator.taskmanager_view(tm_name(1)).slots_total == 3
    assert h.allocator.job_view("j1").slots_allocated == 3


def test_a_registration_with_more_slots_than_the_pod_was_made_for_is_refused() -> None:
    """A 4-slot pod claiming 10,000 slots would blow the slot cap and cancel pods on their
    way; it is refused and nothing changes."""
    h = Harness(slots_per_taskmanager=4, max_slots=20)
    h.allocator.declare("j1", 8)
    before = (h.states(), h.allocator.job_view("j1"))
    with pytest.raises(SlotCountMismatch, match="created for 4"):
        h.allocator.register(tm_name(1), address="10.1.1.1:6122", slots=10_000)
    assert (h.states(), h.allocator.job_view("j1")) == before


def test_re_registration_is_harmless_and_may_update_the_address() -> None:
    h = Harness()
    h.scale_up("j1", 2)
    before = h.allocator.job_view("j1")
    assert h.allocator.register(tm_name(1), address="10.9.9.9:6122", slots=4) == []
    view = h.allocator.taskmanager_view(tm_name(1))
    assert view.address == "10.9.9.9:6122"
    assert view.slots_total == 4
    after = h.allocator.job_view("j1")
    assert [s.slot_id for s in after.slots] == [s.slot_id for s in before.slots]
    assert {s.address for s in after.slots} == {"10.9.9.9:6122"}


def test_re_registration_with_another_slot_count_is_refused() -> None:
    h = Harness()
    h.scale_up("j1", 2)
    with pytest.raises(SlotCountMismatch, match="registered with 4"):
        h.allocator.register(tm_name(1), address="10.9.9.9:6122", slots=8)
    assert h.allocator.taskmanager_view(tm_name(1)).address != "10.9.9.9:6122"


def test_registration_needs_at_least_one_slot() -> None:
    h = Harness()
    h.allocator.declare("j1", 1)
    with pytest.raises(ValueError, match="1 or more"):
        h.allocator.register(tm_name(1), address="a:1", slots=0)
    assert h.state(tm_name(1)) is REQUESTED


def test_adopted_pod_may_register() -> None:
    h = Harness()
    h.allocator.adopt([running(tm_name(3, attempt=1))])
    h.allocator.register(tm_name(3, attempt=1), address="a:1", slots=4)
    assert h.state(tm_name(3, attempt=1)) is REGISTERED


# ---------------------------------------------------------------------------- heartbeat


def test_heartbeat_of_unknown_or_unregistered_taskmanager_is_refused() -> None:
    h = Harness()
    with pytest.raises(UnknownTaskManager, match="register again"):
        h.allocator.heartbeat("flink-taskmanager-1-1")
    h.allocator.declare("j1", 1)
    with pytest.raises(UnknownTaskManager, match="register first"):
        h.allocator.heartbeat(tm_name(1))
    h.allocator.declare("j1", 0)
    with pytest.raises(UnknownTaskManager, match="being released"):
        h.allocator.heartbeat(tm_name(1))


def test_heartbeats_keep_a_taskmanager_alive() -> None:
    h = Harness(heartbeat_timeout=50.0)
    h.scale_up("j1", 4)
    for _ in range(10):
        h.clock.advance(30)
        assert h.allocator.heartbeat(tm_name(1)) == []
        assert h.allocator.tick() == []
    assert h.state(tm_name(1)) is REGISTERED


# ---------------------------------------------------------------------------- deregistration


def test_deregister_frees_slots_releases_the_pod_and_replaces_it() -> None:
    h = Harness()
    h.scale_up("j1", 4)
    actions = h.allocator.deregister(tm_name(1))
    assert len(of_type(actions, SlotsFreed)[0].slot_ids) == 4
    assert deleted(actions) == {tm_name(1): ReleaseReason.DEREGISTERED}
    assert of_type(actions, TaskManagerLost) == []
    assert of_type(actions, StartFailure) == []
    assert created(actions) == [tm_name(2)]
    assert h.allocator.deregister(tm_name(1)) == []  # twice: harmless
    with pytest.raises(UnknownTaskManager):
        h.allocator.deregister("flink-taskmanager-7-7")


def test_deregister_before_registering_counts_as_a_failed_start() -> None:
    h = Harness()
    h.allocator.declare("j1", 4)
    h.allocator.create_succeeded(tm_name(1))
    actions = h.allocator.deregister(tm_name(1))
    assert [f.taskmanager_id for f in of_type(actions, StartFailure)] == [tm_name(1)]
    assert deleted(actions) == {tm_name(1): ReleaseReason.DEREGISTERED}
    assert created(actions) == [tm_name(2)]


# ---------------------------------------------------------------------------- orphans and resync


def test_unknown_pod_with_our_name_is_deleted_once() -> None:
    h = Harness()
    orphan = tm_name(5, attempt=9)
    assert h.allocator.pod_observed(running(orphan)) == [DeletePod(orphan, ReleaseReason.ORPHAN)]
    assert h.allocator.pod_observed(running(orphan)) == []
    assert h.allocator.resync([running(orphan)]) == []
    assert h.allocator.status().extra["orphan_pods_deleting"] == 1
    h.allocator.pod_deleted(orphan)
    assert h.allocator.status().extra["orphan_pods_deleting"] == 0
    assert not h.allocator.is_known_pod(orphan)


def test_orphan_missing_from_a_resync_is_forgotten() -> None:
    h = Harness()
    orphan = tm_name(5, attempt=9)
    h.allocator.pod_observed(running(orphan))
    h.allocator.resync([])
    assert h.allocator.status().extra["orphan_pods_deleting"] == 0


def test_foreign_and_terminating_pods_are_left_alone() -> None:
    h = Harness()
    assert h.allocator.pod_observed(running("web-1")) == []
    assert h.allocator.pod_observed(running("other-taskmanager-1-1")) == []
    going = PodObservation(tm_name(4), phase="Running", node_name="n", deleting=True)
    assert h.allocator.pod_observed(going) == []


def test_new_names_skip_pods_seen_with_the_current_attempt() -> None:
    h = Harness()
    h.allocator.pod_observed(running(tm_name(1)))  # an orphan with our own next name
    assert created(h.allocator.declare("j1", 4)) == [tm_name(2)]


def test_resync_treats_missing_pods_as_deleted_but_leaves_creates_in_flight() -> None:
    h = Harness(slots_per_taskmanager=1)
    names = created(h.allocator.declare("j1", 4))
    h.start(names[:1])  # registered
    h.allocator.create_succeeded(names[1])  # pending
    h.allocator.create_succeeded(names[2])  # pending, will be listed
    # names[3]: requested, create in flight
    actions = h.allocator.resync([running(names[2])])
    lost = {x.taskmanager_id: x for x in of_type(actions, TaskManagerLost)}
    assert set(lost) == {names[0], names[1]}
    assert lost[names[0]] == TaskManagerLost(names[0], LossReason.POD_MISSING, True, ("j1",))
    assert lost[names[1]] == TaskManagerLost(names[1], LossReason.POD_MISSING, False, ())
    assert of_type(actions, StartFailure) == []  # deleted, as far as anyone can tell
    assert h.state(names[3]) is REQUESTED
    assert h.state(names[2]) is PENDING
    assert created(actions) == [tm_name(5), tm_name(6)]


def test_resync_forgets_released_pods_that_are_gone_and_observes_the_rest() -> None:
    h = Harness(idle_timeout=1)
    h.scale_up("j1", 4)
    h.allocator.declare("j1", 0)
    h.advance(1)
    assert h.state(tm_name(1)) is RELEASING
    failed = PodObservation(tm_name(2), phase="Failed", node_name="n")
    h.allocator.declare("j1", 4)
    actions = h.allocator.resync([failed])
    assert not h.allocator.is_known_pod(tm_name(1))
    assert deleted(actions) == {tm_name(2): ReleaseReason.FAILED}
    assert created(actions) == [tm_name(3)]


# ---------------------------------------------------------------------------- adoption


def test_adopt_keeps_live_pods_deletes_dead_ones_and_moves_to_the_next_attempt() -> None:
    h = Harness(registration_timeout=300.0)
    live = running(tm_name(4, attempt=2))
    finished = PodObservation(tm_name(5, attempt=2), phase="Succeeded", node_name="n")
    unscheduled = PodObservation(tm_name(6, attempt=3))
    going = PodObservation(tm_name(7, attempt=1), phase="Running", node_name="n", deleting=True)
    foreign = running("other-taskmanager-8-1")
    actions = h.allocator.adopt([live, finished, unscheduled, going, foreign])
    assert deleted(actions) == {
        finished.name: ReleaseReason.FAILED,
        unscheduled.name: ReleaseReason.UNSCHEDULABLE,
    }
    assert h.states() == {
        live.name: PENDING,
        finished.name: RELEASING,
        unscheduled.name: RELEASING,
        going.name: RELEASING,
    }
    assert (None, PENDING) in [(c.old, c.new) for c in of_type(actions, TaskManagerChanged)]
    assert h.allocator.attempt == 4
    assert h.allocator.next_deadline() == pytest.approx(h.now + 300.0)
    assert created(h.allocator.declare("j1", 4)) == [tm_name(1, attempt=4)]


def test_adopted_pods_are_not_cancelled_and_time_out_if_they_never_register() -> None:
    h = Harness(registration_timeout=300.0)
    adopted = tm_name(1, attempt=1)
    assert deleted(h.allocator.adopt([running(adopted)])) == {}
    assert h.allocator.declare("j1", 0) == []
    actions = h.advance(300)
    assert deleted(actions) == {adopted: ReleaseReason.REGISTRATION_TIMEOUT}


def test_adopted_taskmanager_serves_demand_once_registered() -> None:
    h = Harness(idle_timeout=30)
    adopted = tm_name(3, attempt=1)
    h.allocator.adopt([running(adopted)])
    assert created(h.allocator.declare("j1", 4)) == [tm_name(1, attempt=2)]
    actions = h.allocator.register(adopted, address="a:1", slots=4)
    assert of_type(actions, SlotsAllocated)[0].slot_ids[0].startswith(adopted)
    newer = tm_name(1, attempt=2)
    assert deleted(actions) == {}  # its create is in flight: deleted once it lands
    assert deleted(h.allocator.create_succeeded(newer)) == {newer: ReleaseReason.EXCESS}


def test_adopt_without_pods_keeps_the_attempt() -> None:
    h = Harness(attempt=3)
    actions = h.allocator.adopt([])
    assert created(actions) == []
    assert deleted(actions) == {}
    assert h.allocator.attempt == 3


# ---------------------------------------------------------------------------- views and status


def test_taskmanager_view_lists_every_slot_and_idle_since_in_wall_time() -> None:
    h = Harness(slots_per_taskmanager=2)
    h.scale_up("j1", 1)
    view = h.allocator.taskmanager_view(tm_name(1))
    assert view.slots == (
        SlotView(f"{tm_name(1)}/0", tm_name(1), "j1", "10.0.0.1:6122"),
        SlotView(f"{tm_name(1)}/1", tm_name(1), None, "10.0.0.1:6122"),
    )
    assert view.slots_allocated == 1
    assert view.idle_since is None
    assert (view.pod_phase, view.node_name) == ("Running", "node-1")
    h.clock.advance(10)
    h.allocator.declare("j1", 0)
    assert h.allocator.taskmanager_view(tm_name(1)).idle_since == pytest.approx(h.clock.wall())
    with pytest.raises(UnknownTaskManager):
        h.allocator.taskmanager_view("nope")


def test_unregistered_taskmanager_view_has_no_slots_and_no_idle_since() -> None:
    h = Harness()
    h.allocator.declare("j1", 1)
    view = h.allocator.taskmanager_view(tm_name(1))
    assert (view.state, view.slots, view.idle_since, view.slots_total) == (REQUESTED, (), None, 4)


def test_status_counts_every_state_and_slot() -> None:
    h = Harness(slots_per_taskmanager=4)
    assert h.allocator.status().taskmanagers == {
        "requested": 0,
        "pending": 0,
        "registered": 0,
        "releasing": 0,
    }
    h.scale_up("a", 6)
    h.allocator.declare("b", 5)  # 2 free slots go to b, 3 more wait: one pod requested
    status = h.allocator.status()
    assert status.taskmanagers == {"requested": 1, "pending": 0, "registered": 2, "releasing": 0}
    assert (status.slots_total, status.slots_free, status.slots_allocated) == (8, 0, 8)
    assert (status.jobs, status.pending_slot_demand) == (2, 3)
    assert status.starts_throttled_until is None
    assert status.extra["slots_coming"] == 4


def test_job_views_follow_declaration_order() -> None:
    h = Harness()
    for job in ("c", "a", "b"):
        h.allocator.declare(job, 1)
    assert [v.job_id for v in h.allocator.job_views()] == ["c", "a", "b"]


def test_taskmanager_views_in_creation_order() -> None:
    h = Harness(slots_per_taskmanager=1)
    h.allocator.declare("j1", 11)
    names = [v.taskmanager_id for v in h.allocator.taskmanager_views()]
    assert names == [tm_name(i) for i in range(1, 12)]


def test_next_deadline_is_none_when_nothing_is_scheduled() -> None:
    h = Harness()
    assert h.allocator.next_deadline() is None
    assert h.allocator.tick() == []


def test_next_deadline_is_the_earliest_timer() -> None:
    h = Harness(idle_timeout=30, heartbeat_timeout=50, registration_timeout=300)
    h.allocator.declare("j1", 4)
    assert h.allocator.next_deadline() == pytest.approx(h.now + 300)  # registration
    h.clock.advance(10)
    h.start([tm_name(1)])
    assert h.allocator.next_deadline() == pytest.approx(h.now + 50)  # heartbeat
    h.clock.advance(10)
    h.allocator.declare("j1", 0)
    assert h.allocator.next_deadline() == pytest.approx(h.now + 30)  # idle release


def test_every_state_change_is_announced() -> None:
    h = Harness(idle_timeout=5)
    log = h.allocator.declare("j1", 4)
    log += h.start([tm_name(1)])
    log += h.allocator.declare("j1", 0)
    log += h.advance(5)
    log += h.allocator.pod_deleted(tm_name(1))
    changes = [(c.old, c.new) for c in of_type(log, TaskManagerChanged)]
    assert changes == [
        (None, REQUESTED),
        (REQUESTED, PENDING),
        (PENDING, REGISTERED),
        (REGISTERED, RELEASING),
        (RELEASING, None),
    ]
