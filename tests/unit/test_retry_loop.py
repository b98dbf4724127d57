"""The one backoff policy and the one retry loop (rmd.retry), on recorded sleeps, a manual
clock and fixed jitter picks."""

from __future__ import annotations

import pytest

from rmd.core.clock import ManualClock
from rmd.retry import Abandoned, Backoff, Failure, Pacing, RetryPolicy, retry


class Flaky:
    """Fails ``failures`` times with ``error``, then returns "ok"."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error if error is not None else ConnectionError("down")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


class Clocked:
    """Sleeps that advance a manual clock and are recorded."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.delays: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)

    def pacing(self, pick: float = 0.5) -> Pacing:
        return Pacing(sleep=self.sleep, uniform=lambda: pick, monotonic=self.clock.monotonic)


def test_full_jitter_is_the_default_and_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base=1.0, cap=8.0)
    assert [backoff.delay(n, uniform=lambda: 0.5) for n in range(1, 7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        4.0,
        4.0,
    ]
    assert backoff.delay(3, uniform=lambda: 0.0) == 0.0


def test_equal_jitter_and_the_floor() -> None:
    assert Backoff(base=1.0, cap=8.0, min_fraction=0.5).delay(3, uniform=lambda: 0.0) == 2.0
    assert Backoff(base=1.0, cap=8.0, floor=0.05).delay(3, uniform=lambda: 0.0) == 0.05


def test_retry_after_replaces_the_backoff_capped_and_spread_when_asked() -> None:
    exact = Backoff(base=0.5, cap=1.0, max_retry_after=60.0)
    assert exact.delay(1, uniform=lambda: 0.9, retry_after=7.0) == 7.0
    assert exact.delay(1, uniform=lambda: 0.9, retry_after=3600.0) == 60.0
    spread = Backoff(base=0.5, cap=1.0, retry_after_jitter=0.2)
    assert spread.delay(1, uniform=lambda: 0.5, retry_after=7.0) == pytest.approx(7.1)


async def test_retries_until_success_and_reports_every_failure() -> None:
    clocked = Clocked()
    failures: list[Failure] = []
    flaky = Flaky(3)
    policy = RetryPolicy(backoff=Backoff(base=1.0, cap=8.0))
    result = await retry(flaky, policy=policy, on_failure=failures.append, pacing=clocked.pacing())
    assert result == "ok"
    assert flaky.calls == 4
    assert clocked.delays == [0.5, 1.0, 2.0]
    assert [(f.attempt, f.delay) for f in failures] == [(1, 0.5), (2, 1.0), (3, 2.0)]


async def test_an_error_that_is_not_retriable_is_raised_at_once_and_reported_as_final() -> None:
    clocked = Clocked()
    failures: list[Failure] = []
    flaky = Flaky(5, ValueError("bad request"))
    with pytest.raises(ValueError, match="bad request"):
        await retry(
            flaky,
            policy=RetryPolicy(),
            retriable=lambda error: isinstance(error, ConnectionError),
            on_failure=failures.append,
            pacing=clocked.pacing(),
        )
    assert flaky.calls == 1
    assert clocked.delays == []
    assert [(f.attempt, f.delay) for f in failures] == [(1, None)]


async def test_max_attempts_counts_the_first_try() -> None:
    clocked = Clocked()
    flaky = Flaky(10)
    with pytest.raises(ConnectionError):
        await retry(flaky, policy=RetryPolicy(max_attempts=3), pacing=clocked.pacing())
    assert flaky.calls == 3
    assert len(clocked.delays) == 2


async def test_no_attempt_starts_after_the_time_budget() -> None:
    clocked = Clocked()
    failures: list[Failure] = []
    flaky = Flaky(100)
    policy = RetryPolicy(backoff=Backoff(base=2.0, cap=8.0), max_elapsed=20.0)
    with pytest.raises(ConnectionError):
        await retry(
            flaky, policy=policy, on_failure=failures.append, pacing=clocked.pacing(pick=1.0)
        )
    # waits 2, 4, 8 (14 s); the next 8 would start a try at 22 s > 20 s: give up instead
    assert clocked.delays == [2.0, 4.0, 8.0]
    assert flaky.calls == 4
    assert failures[-1].delay is None


async def test_a_server_retry_after_is_waited_for() -> None:
    clocked = Clocked()
    policy = RetryPolicy(backoff=Backoff(base=0.1, cap=0.2))
    result = await retry(
        Flaky(1), policy=policy, retry_after=lambda error: 5.0, pacing=clocked.pacing()
    )
    assert result == "ok"
    assert clocked.delays == [5.0]


async def test_abandon_stops_between_attempts() -> None:
    clocked = Clocked()
    flaky = Flaky(100)
    with pytest.raises(Abandoned):
        await retry(
            flaky,
            policy=RetryPolicy(),
            abandon=lambda: flaky.calls >= 2,
            pacing=clocked.pacing(),
        )
    assert flaky.calls == 2


async def test_an_exception_from_the_sleep_ends_the_loop() -> None:
    class Stop(Exception):
        pass

    async def interrupted(seconds: float) -> None:
        raise Stop

    flaky = Flaky(100)
    with pytest.raises(Stop):
        await retry(flaky, policy=RetryPolicy(), pacing=Pacing(sleep=interrupted))
    assert flaky.calls == 1
