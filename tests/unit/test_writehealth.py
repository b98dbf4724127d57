"""Whether the API server answers pod writes (rmd.kube.writehealth), on a manual clock."""

from __future__ import annotations

import pytest

from rmd.core.clock import ManualClock
from rmd.kube.writehealth import WriteHealth


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_a_write_waiting_ten_seconds_is_unanswered_until_it_is_answered(
    clock: ManualClock,
) -> None:
    health = WriteHealth(clock=clock, slow_after=10.0)
    sent_at = clock.monotonic()
    token = health.sent()
    clock.advance(9.9)
    assert health.unanswered() is None
    clock.advance(0.1)
    unanswered = health.unanswered()
    assert unanswered is not None
    assert (unanswered.since, unanswered.waiting, unanswered.timed_out) == (sent_at, 1, 0)
    assert "10 s" in unanswered.detail(now=clock.monotonic())
    health.answered(token)
    assert health.unanswered() is None


def test_timeouts_in_a_row_are_unanswered_writes_and_any_answer_clears_them(
    clock: ManualClock,
) -> None:
    health = WriteHealth(clock=clock, slow_after=60.0, timeouts_in_a_row=2)
    health.timed_out(health.sent())
    assert health.unanswered() is None  # one timeout is not yet a pattern
    health.timed_out(health.sent())
    unanswered = health.unanswered()
    assert unanswered is not None
    assert unanswered.timed_out == 2
    health.answered(health.sent())  # an HTTP error status is an answer too
    assert health.unanswered() is None
    health.timed_out(health.sent())
    assert health.unanswered() is None  # counting starts again


def test_connection_failures_are_not_unanswered_writes(clock: ManualClock) -> None:
    health = WriteHealth(clock=clock, slow_after=5.0, timeouts_in_a_row=1)
    for _ in range(5):
        token = health.sent()
        clock.advance(1.0)
        health.failed(token)
    clock.advance(10.0)
    assert health.unanswered() is None


@pytest.mark.parametrize(("slow_after", "in_a_row"), [(0.0, 2), (-1.0, 2), (10.0, 0)])
def test_settings_are_checked(clock: ManualClock, slow_after: float, in_a_row: int) -> None:
    with pytest.raises(ValueError, match=r"slow_after|timeouts_in_a_row"):
        WriteHealth(clock=clock, slow_after=slow_after, timeouts_in_a_row=in_a_row)
