"""The release gate: with an external usage source (Flink's REST API), an idle TaskManager is
released only after that source, too, has reported it idle for the whole idle timeout."""

from __future__ import annotations

import pytest

from rmd.core.model import ReleaseReason, TaskManagerState
from tests.unit.allocator_harness import Harness, deleted

REGISTERED = TaskManagerState.REGISTERED
RELEASING = TaskManagerState.RELEASING
TIMEOUT = 30.0


def gated(*, slots_per_taskmanager: int = 4) -> Harness:
    return Harness(
        idle_timeout=TIMEOUT,
        heartbeat_timeout=1e9,
        external_usage_gate=True,
        slots_per_taskmanager=slots_per_taskmanager,
    )


def test_idle_taskmanager_is_kept_while_the_source_has_not_reported_it() -> None:
    h = gated()
    [name] = h.scale_up("j1", 4)
    h.allocator.declare("j1", 0)

    assert h.allocator.next_deadline() == pytest.approx(h.now + 1e9)  # heartbeat only
    assert h.advance(3600) == []
    assert h.state(name) is REGISTERED


def test_released_exactly_idle_timeout_after_the_first_idle_report() -> None:
    h = gated()
    [name] = h.scale_up("j1", 4)
    h.allocator.declare("j1", 0)
    h.clock.advance(10)  # idle to rmd for 10 s before the source says so

    assert h.allocator.observe_external_usage({name: False}) == []
    assert h.allocator.next_deadline() == pytest.approx(h.now + TIMEOUT)
    assert h.advance(TIMEOUT - 0.001) == []
    assert deleted(h.advance(0.001)) == {name: ReleaseReason.IDLE}
    assert h.state(name) is RELEASING


def test_source_idle_first_then_rmd_idle_counts_from_the_later_of_both() -> None:
    h = gated()
    [name] = h.scale_up("j1", 4)
    h.allocator.observe_external_usage({name: False})  # Flink placed nothing there yet
    h.clock.advance(100)
    h.allocator.declare("j1", 0)

    assert h.advance(TIMEOUT - 0.001) == []
    assert deleted(h.advance(0.001)) == {name: ReleaseReason.IDLE}


def test_a_busy_report_restarts_the_timer() -> None:
    h = gated()
    [name] = h.scale_up("j1", 4)
    h.allocator.declare("j1", 0)
    h.allocator.observe_external_usage({name: False})
    h.advance(20)
    h.allocator.observe_external_usage({name: True})
    h.advance(5)
    h.allocator.observe_external_usage({name: False})
    h.allocator.observe_external_usage({name: False})  # still idle: the timer keeps running

    assert h.advance(TIMEOUT - 0.001) == []
    assert deleted(h.advance(0.001)) == {name: ReleaseReason.IDLE}


def test_never_released_while_the_source_is_unreachable() -> None:
    h = gated()
    [name] = h.scale_up("j1", 4)
    h.allocator.declare("j1", 0)
    h.allocator.observe_external_usage({name: False})
    h.advance(TIMEOUT - 1)

    assert h.allocator.external_usage_unknown() == []
    assert h.advance(3600) == []
    assert h.state(name) is REGISTERED
    # Back again: the timer starts from the first report after the outage.
    h.allocator.observe_external_usage({name: False})
    assert h.advance(TIMEOUT - 0.001) == []
    assert deleted(h.advance(0.001)) == {name: ReleaseReason.IDLE}


def test_a_taskmanager_missing_from_a_report_counts_as_unknown() -> None:
    h = gated(slots_per_taskmanager=2)
    first, second = h.scale_up("j1", 4)
    h.allocator.declare("j1", 0)
    h.allocator.observe_external_usage({first: False, second: False})
    h.advance(10)
    h.allocator.observe_external_usage({first: False})  # the second one left Flink's list

    assert deleted(h.advance(TIMEOUT - 10)) == {first: ReleaseReason.IDLE}
    assert h.state(second) is REGISTERED
    assert h.advance(3600) == []


def test_source_idle_never_releases_a_taskmanager_that_holds_rmd_slots() -> None:
    h = gated()
    [name] = h.scale_up("j1", 4)
    h.allocator.observe_external_usage({name: False})
    assert h.advance(3600) == []
    assert h.allocator.job_view("j1").fulfilled


def test_cancelling_one_job_never_releases_a_taskmanager_the_other_job_uses_in_flink() -> None:
    # rmd's bookkeeping put j1 on the first TaskManager and j2 on the second; Flink placed
    # j2's tasks on both. j1 ends: to rmd the first one is idle, to Flink it is not.
    h = gated(slots_per_taskmanager=2)
    first, second = h.scale_up("j1", 2) + h.scale_up("j2", 2)
    h.allocator.observe_external_usage({first: True, second: True})
    h.allocator.remove_job("j1")
    for _ in range(120):
        assert h.advance(1) == []
        h.allocator.observe_external_usage({first: True, second: True})
    assert h.states() == {first: REGISTERED, second: REGISTERED}
    # j2 ends too: Flink frees everything, both go after the timeout.
    h.allocator.remove_job("j2")
    h.allocator.observe_external_usage({first: False, second: False})
    assert deleted(h.advance(TIMEOUT)) == {first: ReleaseReason.IDLE, second: ReleaseReason.IDLE}


def test_unknown_ids_in_a_report_are_ignored() -> None:
    h = gated()
    [name] = h.scale_up("j1", 4)
    assert h.allocator.observe_external_usage({"someone-else": False, name: True}) == []


def test_reports_need_the_gate() -> None:
    h = Harness()
    with pytest.raises(RuntimeError, match="external_usage_gate"):
        h.allocator.observe_external_usage({})
    with pytest.raises(RuntimeError, match="external_usage_gate"):
        h.allocator.external_usage_unknown()
