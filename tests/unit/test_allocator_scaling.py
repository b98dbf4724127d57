"""Demand in, pods and slots out: scale-up, packing, scale-down, idle release, caps, spares."""

from __future__ import annotations

import pytest

from rmd.core.allocator import Allocator, AllocatorSettings
from rmd.core.clock import ManualClock
from rmd.core.model import (
    CreatePod,
    ReleaseReason,
    SlotsAllocated,
    SlotsFreed,
    TaskManagerChanged,
    TaskManagerState,
    UnknownJob,
)
from tests.unit.allocator_harness import Harness, created, deleted, of_type, running, tm_name

REQUESTED = TaskManagerState.REQUESTED
PENDING = TaskManagerState.PENDING
REGISTERED = TaskManagerState.REGISTERED
RELEASING = TaskManagerState.RELEASING


@pytest.mark.parametrize(("slots", "pods"), [(1, 1), (4, 1), (5, 2), (8, 2), (10, 3), (0, 0)])
def test_declare_creates_ceil_slots_over_slots_per_taskmanager(slots: int, pods: int) -> None:
    h = Harness(slots_per_taskmanager=4)
    actions = h.allocator.declare("j1", slots)
    assert created(actions) == [tm_name(i) for i in range(1, pods + 1)]
    assert h.states() == {tm_name(i): REQUESTED for i in range(1, pods + 1)}
    changes = of_type(actions, TaskManagerChanged)
    assert [(c.old, c.new) for c in changes] == [(None, REQUESTED)] * pods


def test_same_declaration_again_changes_nothing() -> None:
    h = Harness()
    h.allocator.declare("j1", 10)
    assert h.allocator.declare("j1", 10) == []
    h.start([tm_name(1)])
    assert h.allocator.declare("j1", 10) == []
    assert h.allocator.job_view("j1").slots_allocated == 4


def test_larger_declaration_creates_only_the_difference() -> None:
    h = Harness()
    h.allocator.declare("j1", 4)
    assert created(h.allocator.declare("j1", 12)) == [tm_name(2), tm_name(3)]


def test_pending_and_registered_pods_count_as_supply() -> None:
    h = Harness()
    h.allocator.declare("j1", 4)
    h.allocator.create_succeeded(tm_name(1))
    assert created(h.allocator.declare("j2", 4)) == [tm_name(2)]
    h.start([tm_name(1), tm_name(2)])
    assert h.allocator.job_view("j1").fulfilled
    assert h.allocator.job_view("j2").fulfilled


def test_index_grows_and_is_never_reused() -> None:
    h = Harness()
    first = created(h.allocator.declare("j1", 4))
    h.allocator.declare("j1", 0)
    h.allocator.pod_deleted(first[0])
    assert created(h.allocator.declare("j1", 4)) == [tm_name(2)]


def test_life_cycle_requested_pending_registered() -> None:
    h = Harness()
    h.allocator.declare("j1", 2)
    name = tm_name(1)
    actions = h.allocator.create_succeeded(name)
    assert of_type(actions, TaskManagerChanged) == [
        TaskManagerChanged(name, REQUESTED, PENDING, "pod created")
    ]
    assert h.allocator.create_succeeded(name) == []  # twice: nothing more
    h.clock.advance(7)
    actions = h.allocator.register(name, address="10.0.0.9:6122", slots=4)
    assert of_type(actions, TaskManagerChanged) == [
        TaskManagerChanged(name, PENDING, REGISTERED, "registered")
    ]
    allocated = of_type(actions, SlotsAllocated)
    assert allocated == [SlotsAllocated("j1", (f"{name}/0", f"{name}/1"), (7.0, 7.0))]
    view = h.allocator.job_view("j1")
    assert view.fulfilled
    assert [(s.slot_id, s.taskmanager_id, s.address) for s in view.slots] == [
        (f"{name}/0", name, "10.0.0.9:6122"),
        (f"{name}/1", name, "10.0.0.9:6122"),
    ]


def test_observation_alone_makes_a_requested_pod_pending() -> None:
    h = Harness()
    h.allocator.declare("j1", 1)
    h.allocator.pod_observed(running(tm_name(1)))
    assert h.state(tm_name(1)) is PENDING


def test_waited_seconds_is_per_unit_of_demand_fifo() -> None:
    h = Harness(slots_per_taskmanager=2)
    h.allocator.declare("j1", 2)  # t=0: two units
    h.clock.advance(3)
    h.allocator.declare("j1", 4)  # t=3: two more
    h.clock.advance(2)
    h.allocator.create_succeeded(tm_name(1))
    first = h.allocator.register(tm_name(1), address="a:1", slots=2)
    assert of_type(first, SlotsAllocated)[0].waited_seconds == (5.0, 5.0)
    h.clock.advance(1)
    second = h.allocator.register(tm_name(2), address="b:1", slots=2)
    assert of_type(second, SlotsAllocated)[0].waited_seconds == (3.0, 3.0)


def test_lowering_unmet_demand_drops_the_newest_waiting_units() -> None:
    h = Harness(slots_per_taskmanager=4)
    h.allocator.declare("j1", 2)
    h.clock.advance(10)
    h.allocator.declare("j1", 4)
    h.allocator.declare("j1", 2)  # the two units from t=10 go
    h.allocator.create_succeeded(tm_name(1))
    actions = h.allocator.register(tm_name(1), address="a:1", slots=4)
    assert of_type(actions, SlotsAllocated)[0].waited_seconds == (10.0, 10.0)


def test_allocation_packs_onto_the_busiest_taskmanager() -> None:
    h = Harness(slots_per_taskmanager=4)
    names = h.scale_up("j1", 8)
    h.allocator.declare("j1", 5)  # TM 2 keeps 1 slot, TM 1 keeps 4 (fewest freed first)
    assert (h.allocated_on(names[0]), h.allocated_on(names[1])) == (4, 1)
    actions = h.allocator.declare("j2", 2)
    assert created(actions) == []
    assert of_type(actions, SlotsAllocated) == [
        SlotsAllocated("j2", (f"{names[1]}/1", f"{names[1]}/2"), (0.0, 0.0))
    ]


def test_allocation_ties_break_by_name_in_numeric_order() -> None:
    h = Harness(slots_per_taskmanager=1)
    h.allocator.declare("j1", 10)
    # Register 10 before 2: the numeric name order still prefers 2 for new demand.
    names = [tm_name(i) for i in range(1, 11)]
    h.start(names)
    h.allocator.declare("j1", 0)
    actions = h.allocator.declare("j1", 1)
    assert of_type(actions, SlotsAllocated)[0].slot_ids == (f"{tm_name(1)}/0",)
    h.allocator.declare("j1", 2)
    assert h.job_slots("j1") == [f"{tm_name(1)}/0", f"{tm_name(2)}/0"]


def test_scale_down_frees_slots_on_the_least_used_taskmanagers_first() -> None:
    h = Harness(slots_per_taskmanager=4)
    names = h.scale_up("a", 6)  # TM1: 4 of a, TM2: 2 of a
    h.allocator.declare("b", 1)  # TM2 (busier than empty) gets b's slot: TM2 = 3
    assert h.allocated_on(names[1]) == 3
    actions = h.allocator.declare("a", 3)  # free 3 of a: both on TM2 first, then one on TM1
    freed = of_type(actions, SlotsFreed)
    assert len(freed) == 1
    assert freed[0].job_id == "a"
    assert sorted(freed[0].slot_ids) == [f"{names[0]}/3", f"{names[1]}/0", f"{names[1]}/1"]
    assert h.allocated_on(names[0]) == 3
    assert h.allocated_on(names[1]) == 1


def test_scale_down_empties_an_older_lightly_used_taskmanager_first() -> None:
    h = Harness(slots_per_taskmanager=4)
    h.scale_up("a", 4)  # TM1
    h.scale_up("b", 4)  # TM2
    h.allocator.remove_job("a")
    h.allocator.declare("b", 5)  # TM1 (older) gets 1 slot of b, TM2 (newer) has 4
    actions = h.allocator.declare("b", 4)
    assert of_type(actions, SlotsFreed)[0].slot_ids == (f"{tm_name(1)}/0",)
    assert h.allocator.taskmanager_view(tm_name(1)).idle_since is not None


def test_scale_down_to_zero_keeps_the_job_and_frees_everything() -> None:
    h = Harness()
    h.scale_up("j1", 8)
    actions = h.allocator.declare("j1", 0)
    assert len(of_type(actions, SlotsFreed)[0].slot_ids) == 8
    view = h.allocator.job_view("j1")
    assert (view.slots_required, view.slots_allocated, view.fulfilled) == (0, 0, True)


def test_remove_job_frees_its_slots_and_forgets_it() -> None:
    h = Harness()
    h.scale_up("j1", 4)
    actions = h.allocator.remove_job("j1")
    assert of_type(actions, SlotsFreed) == [
        SlotsFreed("j1", tuple(f"{tm_name(1)}/{i}" for i in (3, 2, 1, 0)), "job removed")
    ]
    with pytest.raises(UnknownJob, match="j1"):
        h.allocator.job_view("j1")
    with pytest.raises(UnknownJob):
        h.allocator.remove_job("j1")
    assert h.allocator.job_views() == []


def test_negative_requirement_is_refused_without_change() -> None:
    h = Harness()
    with pytest.raises(ValueError, match="0 or more"):
        h.allocator.declare("j1", -1)
    assert h.allocator.job_views() == []


# ---------------------------------------------------------------------------- idle release


def test_idle_taskmanager_is_released_exactly_at_idle_timeout() -> None:
    h = Harness(idle_timeout=30.0, heartbeat_timeout=1000.0)
    names = h.scale_up("j1", 4)
    h.clock.advance(5)
    assert deleted(h.allocator.declare("j1", 0)) == {}
    assert h.allocator.next_deadline() == pytest.approx(h.now + 30.0)
    assert h.advance(29.999) == []
    assert h.state(names[0]) is REGISTERED
    actions = h.advance(0.001)
    assert deleted(actions) == {names[0]: ReleaseReason.IDLE}
    assert h.state(names[0]) is RELEASING
    assert of_type(actions, TaskManagerChanged) == [
        TaskManagerChanged(names[0], REGISTERED, RELEASING, "idle")
    ]
    h.allocator.pod_deleted(names[0])
    assert not h.allocator.is_known_pod(names[0])


def test_idle_timer_restarts_when_the_taskmanager_gets_work_again() -> None:
    h = Harness(idle_timeout=30.0, heartbeat_timeout=1000.0)
    names = h.scale_up("j1", 4)
    h.allocator.declare("j1", 0)
    h.advance(20)
    h.allocator.declare("j1", 1)
    h.allocator.declare("j1", 0)
    assert h.advance(29) == []
    assert deleted(h.advance(1)) == {names[0]: ReleaseReason.IDLE}


def test_registered_taskmanager_that_never_gets_slots_is_released_after_idle_timeout() -> None:
    h = Harness(idle_timeout=30.0)
    h.allocator.declare("j1", 4)
    h.allocator.declare("j1", 0)  # cancels the requested pod ...
    h.allocator.declare("j1", 4)  # ... and asks for a new one
    name = tm_name(2)
    h.start([name])
    h.allocator.declare("j1", 0)
    assert deleted(h.advance(30)) == {name: ReleaseReason.IDLE}


def test_taskmanager_with_allocated_slots_is_never_idle_released() -> None:
    h = Harness(idle_timeout=1.0, heartbeat_timeout=1e9)
    h.scale_up("j1", 4)
    assert h.allocator.next_deadline() == pytest.approx(h.now + 1e9)
    assert h.advance(3600) == []


# ---------------------------------------------------------------------------- cancellation


def test_demand_drop_cancels_unscheduled_pods_first_then_newest() -> None:
    h = Harness(slots_per_taskmanager=1)
    names = created(h.allocator.declare("j1", 4))
    h.allocator.pod_observed(running(names[0], node="n1"))  # scheduled
    h.allocator.create_succeeded(names[1])  # pending, unscheduled
    h.allocator.pod_observed(running(names[2], node="n1"))  # scheduled
    # names[3] still requested
    first = h.allocator.declare("j1", 2)
    # names[3] and names[1] are cancelled; names[3]'s create is still in flight, so its
    # delete waits until the create lands.
    assert list(deleted(first)) == [names[1]]
    assert set(deleted(first).values()) == {ReleaseReason.EXCESS}
    assert h.states()[names[3]] is TaskManagerState.RELEASING
    assert h.allocator.taskmanager_view(names[3]).delete_waits_for_create
    assert not h.allocator.taskmanager_view(names[1]).delete_waits_for_create  # delete sent
    assert deleted(h.allocator.create_succeeded(names[3])) == {names[3]: ReleaseReason.EXCESS}
    assert not h.allocator.taskmanager_view(names[3]).delete_waits_for_create
    second = h.allocator.declare("j1", 0)
    assert list(deleted(second)) == [names[2], names[0]]


def test_registered_idle_taskmanagers_make_pending_ones_excess() -> None:
    h = Harness(slots_per_taskmanager=4)
    h.scale_up("a", 4)
    h.allocator.declare("b", 4)  # second pod requested
    assert h.states()[tm_name(2)] is REQUESTED
    actions = h.allocator.remove_job("a")  # TM1 idle now covers b ... b got it at once
    assert h.states()[tm_name(2)] is TaskManagerState.RELEASING  # cancelled
    assert deleted(actions) == {}  # its create is in flight: deleted once it lands
    assert deleted(h.allocator.create_succeeded(tm_name(2))) == {tm_name(2): ReleaseReason.EXCESS}
    assert h.allocator.job_view("b").fulfilled


# ---------------------------------------------------------------------------- max_slots


def test_slot_cap_limits_pods_and_explains_itself() -> None:
    h = Harness(slots_per_taskmanager=4, max_slots=10)
    actions = h.allocator.declare("j1", 16)
    assert len(created(actions)) == 2  # a third would make 12 > 10
    h.start(created(actions))
    view = h.allocator.job_view("j1")
    assert view.slots_allocated == 8
    assert view.unfulfilled_reason is not None
    assert "slotmanager.number-of-slots.max = 10" in view.unfulfilled_reason
    assert h.allocator.declare("j1", 16) == []


def test_slot_cap_serves_jobs_in_order_of_first_declaration() -> None:
    h = Harness(slots_per_taskmanager=4, max_slots=8)
    created_a = created(h.allocator.declare("a", 8))
    assert created(h.allocator.declare("b", 4)) == []
    h.allocator.declare("a", 8)  # re-declaring keeps a's place
    h.start(created_a)
    a, b = h.allocator.job_view("a"), h.allocator.job_view("b")
    assert a.fulfilled
    assert a.unfulfilled_reason is None
    assert b.slots_allocated == 0
    assert b.unfulfilled_reason is not None
    assert "4 of the 4 required slots" in b.unfulfilled_reason
    actions = h.allocator.declare("a", 4)  # b gets what a frees, at once
    assert of_type(actions, SlotsAllocated)[0].job_id == "b"
    assert h.allocator.job_view("b").fulfilled


def test_slot_cap_zero_creates_nothing() -> None:
    h = Harness(max_slots=0)
    assert h.allocator.declare("j1", 3) == []
    assert "max = 0" in (h.allocator.job_view("j1").unfulfilled_reason or "")


def test_uncapped_waiting_job_has_no_reason() -> None:
    h = Harness()
    h.allocator.declare("j1", 3)
    view = h.allocator.job_view("j1")
    assert not view.fulfilled
    assert view.unfulfilled_reason is None
    assert view.problems == ()


# ---------------------------------------------------------------------------- spares


def test_spares_are_requested_once_the_pending_pods_registered() -> None:
    h = Harness(slots_per_taskmanager=4, redundant_taskmanagers=1)
    first = created(h.allocator.declare("j1", 8))
    assert len(first) == 2  # no spare while pods are on their way
    h.start(first[:1])
    assert created(h.allocator.declare("j1", 8)) == []
    spare = created(h.start(first[1:]))
    assert spare == [tm_name(3)]
    h.start(spare)
    assert h.allocator.status().slots_free == 4


def test_spare_is_kept_past_idle_timeout_while_a_job_runs() -> None:
    h = Harness(slots_per_taskmanager=4, redundant_taskmanagers=1, idle_timeout=30.0)
    spare = created(h.start(created(h.allocator.declare("j1", 4))))
    assert spare == [tm_name(2)]
    h.start(spare)
    assert h.advance(29.9) == []
    assert not h.allocator.taskmanager_view(spare[0]).kept_as_spare  # not due yet
    assert h.advance(0.1) == []
    assert h.state(spare[0]) is REGISTERED
    assert h.allocator.taskmanager_view(spare[0]).kept_as_spare  # the idle check kept it
    assert not h.allocator.taskmanager_view(tm_name(1)).kept_as_spare  # busy: not idle
    assert h.allocator.next_deadline() != pytest.approx(h.now)  # no busy loop on the kept spare
    # The job goes: the spare is no longer needed and goes at once (its timeout has passed).
    actions = h.allocator.remove_job("j1")
    assert deleted(actions) == {spare[0]: ReleaseReason.IDLE}
    assert not h.allocator.taskmanager_view(spare[0]).kept_as_spare


def test_spare_takes_over_a_lost_taskmanagers_slots_immediately() -> None:
    h = Harness(slots_per_taskmanager=4, redundant_taskmanagers=1)
    h.start(created(h.allocator.declare("j1", 4)))
    h.start([tm_name(2)])
    actions = h.allocator.pod_deleted(tm_name(1))
    assert of_type(actions, SlotsAllocated)[0].slot_ids[0].startswith(tm_name(2))
    assert created(actions) == [tm_name(3)]  # a new spare


def test_no_spares_without_jobs() -> None:
    h = Harness(redundant_taskmanagers=2)
    assert h.allocator.declare("j1", 0) == []
    assert h.allocator.next_deadline() is None


# ---------------------------------------------------------------------------- pending creates cap


def test_max_pending_creates_limits_pods_in_requested_state() -> None:
    h = Harness(slots_per_taskmanager=1, max_pending_creates=2)
    assert created(h.allocator.declare("j1", 5)) == [tm_name(1), tm_name(2)]
    assert created(h.allocator.create_succeeded(tm_name(1))) == [tm_name(3)]
    assert created(h.allocator.create_succeeded(tm_name(2))) == [tm_name(4)]
    assert created(h.allocator.create_succeeded(tm_name(3))) == [tm_name(5)]
    assert created(h.allocator.create_succeeded(tm_name(4))) == []


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"slots_per_taskmanager": 0}, "slots_per_taskmanager"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"max_slots": -1}, "max_slots"),
        ({"redundant_taskmanagers": -1}, "redundant_taskmanagers"),
        ({"max_pending_creates": 0}, "max_pending_creates"),
        ({"cluster_id": ""}, "cluster_id"),
    ],
)
def test_settings_are_checked(change: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"cluster_id": "flink", "slots_per_taskmanager": 2} | change
    with pytest.raises(ValueError, match=message):
        AllocatorSettings(**values)  # type: ignore[arg-type]


def test_attempt_is_used_in_names() -> None:
    allocator = Allocator(
        AllocatorSettings(cluster_id="c", slots_per_taskmanager=1), clock=ManualClock(), attempt=4
    )
    assert allocator.attempt == 4
    assert allocator.declare("j", 1)[-1] == CreatePod("c-taskmanager-4-1")
