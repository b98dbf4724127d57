"""The deadline queue on its own, and the allocator's timers at scale: a heartbeat costs no
timer work, and a tick with nothing due does nothing."""

from __future__ import annotations

import pytest

from rmd.core.deadlines import DeadlineQueue, Timer
from rmd.core.model import TaskManagerLost
from tests.unit.allocator_harness import Harness, tm_name


def test_the_earliest_valid_entry_comes_first() -> None:
    queue = DeadlineQueue()
    queue.arm("a", Timer.HEARTBEAT, 50.0)
    queue.arm("b", Timer.HEARTBEAT, 20.0)
    queue.arm("a", Timer.IDLE_RELEASE, 30.0)
    queue.arm("c", Timer.REGISTRATION, None)  # no timer runs: nothing armed
    assert queue.first() == (20.0, "b", Timer.HEARTBEAT)
    queue.pop()
    assert queue.first() == (30.0, "a", Timer.IDLE_RELEASE)
    assert len(queue) == 2


def test_an_earlier_arm_supersedes_a_later_one_never_the_other_way() -> None:
    queue = DeadlineQueue()
    queue.arm("a", Timer.HEARTBEAT, 50.0)
    queue.arm("a", Timer.HEARTBEAT, 70.0)  # later: the entry at 50 covers it (lazy)
    assert queue.first() == (50.0, "a", Timer.HEARTBEAT)
    queue.arm("a", Timer.HEARTBEAT, 10.0)  # earlier: the entry at 50 is stale now
    assert queue.first() == (10.0, "a", Timer.HEARTBEAT)
    queue.pop()
    assert queue.first() is None  # the stale entry at 50 is dropped, not returned
    assert len(queue) == 0
    with pytest.raises(IndexError):
        queue.pop()


def busy_cluster(count: int) -> Harness:
    harness = Harness(slots_per_taskmanager=1, heartbeat_timeout=50.0)
    harness.allocator.declare("job", count)
    harness.start([tm_name(index) for index in range(1, count + 1)])
    return harness


def test_heartbeats_arm_nothing_and_a_tick_with_nothing_due_does_nothing() -> None:
    harness = busy_cluster(200)
    allocator = harness.allocator
    queued = len(allocator._timers)
    for _ in range(5):
        harness.clock.advance(10.0)
        for index in range(1, 201):
            assert allocator.heartbeat(tm_name(index)) == []
        assert allocator.tick() == []
    assert len(allocator._timers) == queued  # heartbeats push no entries
    # The next deadline is the true one: 50 s after the last heartbeats.
    assert allocator.next_deadline() == harness.now + 50.0


def test_only_the_silent_taskmanager_is_lost_on_time() -> None:
    harness = busy_cluster(50)
    silent = tm_name(7)
    registered_at = harness.now

    def ten_seconds_pass() -> list[str]:
        harness.clock.advance(10.0)
        for index in range(1, 51):
            if tm_name(index) != silent:
                harness.allocator.heartbeat(tm_name(index))
        actions = harness.allocator.tick()
        return [a.taskmanager_id for a in actions if isinstance(a, TaskManagerLost)]

    for _ in range(4):
        assert ten_seconds_pass() == []
    assert harness.allocator.next_deadline() == registered_at + 50.0
    assert ten_seconds_pass() == [silent]
