"""Exact across restarts (issue 10): the stored state, and what the allocator does with it.

The real allocator on a manual clock: a first one runs, its ``state_snapshot()`` is what the
daemon stores; a second one (the restarted daemon) ``restore``s it and ``adopt``s the pods.
"""

from __future__ import annotations

import pytest

from rmd.core.model import (
    PodObservation,
    RecoveryCompleted,
    ReleaseReason,
    SlotsAllocated,
    TaskManagerRegistered,
)
from rmd.core.recovery import JobState, StateFormatError, StateSnapshot, job_state
from tests.unit.allocator_harness import Harness, created, deleted, of_type, running, tm_name

SLOTS = 2


def restarted(before: Harness, *, recovery_timeout: float = 60.0) -> Harness:
    """A new daemon's allocator that read ``before``'s state and listed its live pods."""
    after = Harness(slots_per_taskmanager=SLOTS, recovery_timeout=recovery_timeout)
    state = StateSnapshot.from_json(before.allocator.state_snapshot().to_json())
    after.allocator.restore(state)
    pods = [running(view.taskmanager_id) for view in before.allocator.taskmanager_views()]
    after.allocator.adopt(pods)
    return after


def running_cluster() -> Harness:
    """Job a holds 4 slots on 2 TaskManagers, job b 2 on a third; job c waits for 2 more."""
    h = Harness(slots_per_taskmanager=SLOTS, recovery_timeout=60.0)
    h.scale_up("a", 4)
    h.scale_up("b", 2)
    h.allocator.declare("c", 2)  # its pod is on its way
    return h


def slots_by_job(h: Harness) -> dict[str, list[str]]:
    return {view.job_id: sorted(s.slot_id for s in view.slots) for view in h.allocator.job_views()}


# ---------------------------------------------------------------------------- the document


def test_snapshot_holds_each_jobs_demand_and_slots_in_declaration_order() -> None:
    h = running_cluster()
    snapshot = h.allocator.state_snapshot()
    assert [job.job_id for job in snapshot.jobs] == ["a", "b", "c"]
    assert snapshot.jobs[0] == JobState("a", 4, ((tm_name(1), (0, 1)), (tm_name(2), (0, 1))))
    assert snapshot.jobs[1] == JobState("b", 2, ((tm_name(3), (0, 1)),))
    assert snapshot.jobs[2] == JobState("c", 2, ())
    assert StateSnapshot.from_json(snapshot.to_json()) == snapshot


def test_the_document_is_compact_and_reads_back_the_same() -> None:
    snapshot = StateSnapshot(
        jobs=(
            job_state("a", 6, {tm_name(1): [0, 1], tm_name(12): [1, 3]}),
            job_state("b", 1, {}, origin="flink"),
        ),
        idle=((tm_name(2), 1_700_000_123),),
    )
    text = snapshot.to_json()
    assert text == (
        '{"version":2,"prefix":"flink-taskmanager-1-","jobs":[{"id":"a","slots":6,'
        '"held":{"1":2,"12":[1,3]}},{"id":"b","slots":1,"held":{},"origin":"flink"}],'
        '"idle":{"2":1700000123}}'
    )
    assert StateSnapshot.from_json(text) == snapshot


def test_state_written_by_the_previous_version_reads_as_before_without_idle_times() -> None:
    v1 = '{"version":1,"jobs":[{"id":"a","slots":2,"held":{"flink-taskmanager-1-1":[0,1]}}]}'
    assert StateSnapshot.from_json(v1) == StateSnapshot(
        jobs=(job_state("a", 2, {tm_name(1): [0, 1]}),)
    )


def test_a_large_cluster_stays_far_below_the_configmap_limit() -> None:
    """10,000 TaskManagers of 4 slots held by 1,000 jobs (64-character ids), 1,000 more
    TaskManagers idle: 197 KiB of the 1 MiB a ConfigMap holds (version 1 wrote 794 KiB for
    the jobs alone: every name in full, every index)."""
    cluster = "flink-" + "x" * 34  # a 40-character cluster id
    jobs = tuple(
        job_state(
            f"{number:064x}",
            40,
            {f"{cluster}-taskmanager-3-{number * 10 + k}": range(4) for k in range(10)},
        )
        for number in range(1000)
    )
    idle = tuple((f"{cluster}-taskmanager-3-{10_000 + k}", 1_700_000_000 + k) for k in range(1000))
    snapshot = StateSnapshot(jobs=jobs, idle=idle)
    size = len(snapshot.to_json().encode())
    assert size < 256 * 1024, size
    assert StateSnapshot.from_json(snapshot.to_json()) == snapshot


def test_equal_states_compare_equal_whatever_the_order_they_were_built_in() -> None:
    assert job_state("a", 3, {"t2": [1, 0], "t1": [0]}) == job_state(
        "a", 3, {"t1": [0], "t2": [0, 1]}
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{", "not JSON"),
        ("[]", "expected a JSON object"),
        ('{"version": 3, "jobs": []}', "version: 3 is not understood"),
        ('{"version": 2, "prefix": 1, "jobs": []}', "prefix: expected a string"),
        ('{"version": 2, "jobs": [], "idle": {"t": "x"}}', r"idle\['t'\]: expected whole"),
        ('{"version": 2, "jobs": [{"id": "a", "slots": 1, "held": {"t": 0}}]}', "count n >= 1"),
        ('{"version": 1, "jobs": {}}', "jobs: expected a list"),
        ('{"version": 1, "jobs": [{"id": "", "slots": 1}]}', r"jobs\[0\].id"),
        ('{"version": 1, "jobs": [{"id": "a", "slots": -1}]}', r"jobs\[0\].slots"),
        ('{"version": 1, "jobs": [{"id": "a", "slots": true}]}', r"jobs\[0\].slots"),
        (
            '{"version": 1, "jobs": [{"id": "a", "slots": 1, "held": {"t": ["0"]}}]}',
            r"jobs\[0\].held\['t'\]",
        ),
        (
            '{"version": 1, "jobs": [{"id": "a", "slots": 1}, {"id": "a", "slots": 2}]}',
            r"jobs\[1\].id: 'a' appears twice",
        ),
    ],
)
def test_a_damaged_document_is_refused_naming_the_field(document: str, message: str) -> None:
    with pytest.raises(StateFormatError, match=message):
        StateSnapshot.from_json(document)


# ---------------------------------------------------------------------------- a restart


def test_a_restarted_allocator_knows_the_demand_and_creates_nothing_the_adopted_pods_cover() -> (
    None
):
    before = running_cluster()
    assert created(before.allocator.create_succeeded(tm_name(4))) == []  # c's pod exists
    after = Harness(slots_per_taskmanager=SLOTS, recovery_timeout=60.0)
    after.allocator.restore(before.allocator.state_snapshot())
    actions = after.allocator.adopt([running(tm_name(i)) for i in (1, 2, 3, 4)])
    assert created(actions) == []
    assert deleted(actions) == {}
    assert {v.job_id: v.slots_required for v in after.allocator.job_views()} == {
        "a": 4,
        "b": 2,
        "c": 2,
    }
    # A JobMaster declaring the same again (after a restart) changes nothing.
    assert created(after.allocator.declare("a", 4)) == []


def test_each_taskmanager_registering_again_gets_back_exactly_the_slots_its_jobs_held() -> None:
    before = running_cluster()
    held = slots_by_job(before)
    after = restarted(before)
    # The TaskManager that held b's slots registers first: a waits longer (first come,
    # first served) but does not get b's slots.
    actions = after.allocator.register(tm_name(3), address="x:1", slots=SLOTS)
    assert of_type(actions, SlotsAllocated) == [
        SlotsAllocated("b", (f"{tm_name(3)}/0", f"{tm_name(3)}/1"), (0.0, 0.0))
    ]
    assert of_type(actions, TaskManagerRegistered)[0].recovered is True
    for index in (1, 2):
        after.allocator.register(tm_name(index), address=f"x:{index}", slots=SLOTS)
    assert slots_by_job(after) == held


def test_reserved_demand_waits_for_its_taskmanager_while_the_window_is_open() -> None:
    before = running_cluster()  # c's pod (tm 4) was created and never registered
    after = restarted(before)
    # tm 4 registers first: its slots go to c, not to a (first come, but a's slots are
    # reserved on tm 1 and 2, which are registering again).
    actions = after.allocator.register(tm_name(4), address="x:4", slots=SLOTS)
    assert [(s.job_id, len(s.slot_ids)) for s in of_type(actions, SlotsAllocated)] == [("c", 2)]
    assert after.allocator.job_view("a").slots_allocated == 0
    assert created(actions) == []


def test_a_second_restart_before_the_taskmanagers_registered_again_keeps_the_assignments() -> None:
    before = running_cluster()
    held = slots_by_job(before)
    middle = restarted(before)
    assert middle.allocator.state_snapshot() == before.allocator.state_snapshot()
    last = restarted(middle)
    for index in (1, 2, 3):
        last.allocator.register(tm_name(index), address=f"x:{index}", slots=SLOTS)
    assert slots_by_job(last) == held


def test_after_the_window_demand_not_covered_by_registered_taskmanagers_gets_new_pods() -> None:
    before = running_cluster()
    after = restarted(before, recovery_timeout=30.0)
    after.allocator.register(tm_name(3), address="x:3", slots=SLOTS)
    assert after.allocator.next_deadline() == pytest.approx(after.now + 30.0)
    actions = after.advance(30.0)
    # a's 4 slots (tm 1, 2 silent) and c's 2: three new pods of the next attempt.
    assert created(actions) == [tm_name(i, attempt=2) for i in (1, 2, 3)]
    # The reservation still holds: tm 1 registering late gets a's slots back.
    late = after.allocator.register(tm_name(1), address="x:1", slots=SLOTS)
    assert of_type(late, SlotsAllocated)[0].job_id == "a"


def test_without_a_recovery_timeout_adopted_pods_are_no_supply_as_in_flink() -> None:
    before = running_cluster()
    after = restarted(before, recovery_timeout=0.0)
    # The restored demand (8 slots) gets 4 new pods at once, beside the 4 adopted ones.
    assert after.allocator.status().taskmanagers["requested"] == 4
    assert created(after.allocator.declare("a", 4)) == []  # declared at restore already


def test_recovery_reports_its_figures_once_every_adopted_taskmanager_settled() -> None:
    before = running_cluster()
    after = Harness(slots_per_taskmanager=SLOTS, recovery_timeout=60.0, registration_timeout=100)
    after.allocator.restore(before.allocator.state_snapshot())
    finished = PodObservation(tm_name(9), phase="Failed", node_name="n")
    actions = after.allocator.adopt([*(running(tm_name(i)) for i in (1, 2, 3)), finished])
    assert of_type(actions, RecoveryCompleted) == []
    after.clock.advance(5)
    after.allocator.register(tm_name(1), address="x:1", slots=SLOTS)
    after.allocator.register(tm_name(2), address="x:2", slots=SLOTS)
    actions = after.advance(95)  # tm 3 never registers again: registration timeout
    [done] = of_type(actions, RecoveryCompleted)
    assert done.seconds == pytest.approx(100.0)
    figures = done.figures
    assert (figures.jobs_restored, figures.slots_declared, figures.slots_reserved) == (3, 8, 6)
    assert (figures.adopted, figures.deleted) == (3, 1)
    assert (figures.reregistered, figures.not_reregistered) == (2, 1)
    assert of_type(after.advance(1), RecoveryCompleted) == []


def idle_then_restarted(*, keep_idle_times: bool) -> tuple[Harness, str]:
    """Two TaskManagers; one idle for 20 s of its 30 s idle timeout when the daemon dies; the
    new one starts 4 s later and both register again. The idle one's name."""
    before = Harness(slots_per_taskmanager=SLOTS, recovery_timeout=60.0, idle_timeout=30.0)
    before.scale_up("a", 4)
    before.clock.advance(1)
    before.allocator.declare("a", 2)  # one TaskManager's slots freed: idle from now
    assert deleted(before.advance(20)) == {}
    state = before.allocator.state_snapshot()
    [(idle_tm, since)] = state.idle
    assert since == int(before.clock.wall()) - 20
    text = state.to_json()
    if not keep_idle_times:  # as the previous version wrote it
        text = StateSnapshot(jobs=state.jobs).to_json()
    after = Harness(slots_per_taskmanager=SLOTS, recovery_timeout=60.0, idle_timeout=30.0)
    after.clock.advance(before.now - after.now + 4)  # the same wall clock, 4 s later
    after.allocator.restore(StateSnapshot.from_json(text))
    after.allocator.adopt([running(tm_name(1)), running(tm_name(2))])
    if keep_idle_times:  # a second restart now would still know it
        assert after.allocator.state_snapshot().idle == state.idle
    for index in (1, 2):
        after.allocator.register(tm_name(index), address=f"x:{index}", slots=SLOTS)
    return after, idle_tm


def test_an_idle_taskmanager_keeps_its_idle_time_across_a_restart() -> None:
    after, idle_tm = idle_then_restarted(keep_idle_times=True)
    # idle 24 s already: released 6 s after it registered again, not 30
    assert after.allocator.taskmanager_view(idle_tm).idle_since == after.clock.wall() - 24
    assert deleted(after.advance(5.5)) == {}
    assert deleted(after.advance(0.5)) == {idle_tm: ReleaseReason.IDLE}
    assert after.allocator.job_view("a").slots_allocated == 2


def test_state_without_idle_times_gives_a_fresh_idle_timeout_as_before() -> None:
    after, idle_tm = idle_then_restarted(keep_idle_times=False)
    assert deleted(after.advance(29.5)) == {}
    assert deleted(after.advance(0.5)) == {idle_tm: ReleaseReason.IDLE}


def test_restore_comes_first() -> None:
    h = running_cluster()
    with pytest.raises(RuntimeError, match="restore"):
        h.allocator.restore(StateSnapshot())
