from __future__ import annotations

import pytest

from rmd.core.ratelimit import StartFailureLimiter


def make(limit: float = 3, retry: float = 3.0) -> StartFailureLimiter:
    return StartFailureLimiter(max_failures_per_minute=limit, retry_interval=retry)


def test_no_failures_no_limit() -> None:
    limiter = make()
    assert limiter.creation_allowance(now=0.0, in_flight=500) is None
    assert limiter.paused_until(0.0) is None
    assert limiter.next_deadline(0.0) is None


def test_trips_when_the_count_reaches_the_limit_and_pauses_retry_interval() -> None:
    limiter = make(limit=3, retry=3.0)
    assert limiter.record_failure(10.0) is None
    assert limiter.record_failure(11.0) is None
    assert limiter.record_failure(12.0) == pytest.approx(15.0)
    assert limiter.paused_until(14.999) == pytest.approx(15.0)
    assert limiter.creation_allowance(now=14.999, in_flight=0) == 0
    assert limiter.next_deadline(14.0) == pytest.approx(15.0)
    assert limiter.paused_until(15.0) is None


def test_failures_during_a_pause_do_not_trip_again() -> None:
    limiter = make(limit=2)
    limiter.record_failure(0.0)
    assert limiter.record_failure(1.0) is not None
    assert limiter.record_failure(2.0) is None
    assert limiter.failures_in_window(2.0) == 3


def test_consecutive_trips_double_the_pause_and_success_resets() -> None:
    limiter = make(limit=2, retry=3.0)
    limiter.record_failure(0.0)
    assert limiter.record_failure(0.0) == pytest.approx(3.0)
    assert limiter.record_failure(3.0) == pytest.approx(9.0)  # 6 s
    assert limiter.record_failure(9.0) == pytest.approx(21.0)  # 12 s
    limiter.record_success()
    assert limiter.record_failure(21.0) == pytest.approx(24.0)  # back to 3 s


def test_pause_never_exceeds_the_window() -> None:
    limiter = make(limit=1, retry=3.0)
    now = 0.0
    pauses = []
    for _ in range(10):
        until = limiter.record_failure(now)
        assert until is not None
        pauses.append(until - now)
        now = until
    assert max(pauses) == pytest.approx(60.0)


def test_failures_leave_the_trailing_window() -> None:
    limiter = make(limit=10)
    limiter.record_failure(0.0)
    limiter.record_failure(30.0)
    assert limiter.failures_in_window(59.9) == 2
    assert limiter.failures_in_window(60.0) == 1
    assert limiter.failures_in_window(90.0) == 0


def test_before_tripping_failures_do_not_slow_creation() -> None:
    limiter = make(limit=10)
    for second in range(9):
        limiter.record_failure(float(second))
    assert not limiter.careful
    assert limiter.creation_allowance(now=9.0, in_flight=100) is None
    assert limiter.next_deadline(9.0) is None


def test_after_tripping_pods_in_flight_count_and_no_probe_exceeds_the_limit() -> None:
    limiter = make(limit=10, retry=3.0)
    for second in range(10):  # trips at t=9, paused until 12
        limiter.record_failure(float(second))
    assert limiter.careful
    assert limiter.creation_allowance(now=11.0, in_flight=0) == 0  # paused
    assert limiter.creation_allowance(now=12.0, in_flight=0) == 0  # the window is still full
    # Failures leave the window: room for more, minus what is in flight.
    assert limiter.next_deadline(12.0) == pytest.approx(60.0)
    assert limiter.creation_allowance(now=60.0, in_flight=0) == 1  # the first failure left
    assert limiter.creation_allowance(now=65.0, in_flight=2) == 10 - 4 - 2
    assert limiter.creation_allowance(now=70.0, in_flight=2) == 8
    limiter.record_success()
    assert not limiter.careful
    assert limiter.creation_allowance(now=70.0, in_flight=2) is None


def test_backoff_lasts_until_a_success_even_when_the_window_empties() -> None:
    limiter = make(limit=1, retry=3.0)
    assert limiter.record_failure(0.0) == pytest.approx(3.0)
    assert limiter.record_failure(3.0) == pytest.approx(9.0)
    assert limiter.record_failure(100.0) == pytest.approx(112.0)
    limiter.record_success()
    assert limiter.record_failure(200.0) == pytest.approx(203.0)


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="retry_interval"):
        StartFailureLimiter(max_failures_per_minute=10, retry_interval=-1)
