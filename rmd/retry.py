"""Backoff and retrying: one policy for how long to wait, one loop that waits and tries again.

Every retry in rmd goes through here: Kubernetes API calls (:mod:`rmd.kube.retry`), the
engine's failed deletes, the reflector's reconnects, the agent's calls to the daemon and the
node emulator's writes. What counts as worth another try, and what a failure is logged as,
stays with the caller; time and chance are injected (:class:`Pacing`), so tests run on
recorded sleeps and fixed picks.

Tenacity would do the looping, but not the two things that matter here: a server's
``Retry-After`` as the delay, and a sleep the caller can interrupt (the agent stops waiting
when its TaskManager exits). The loop is 40 lines; no dependency for it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Uniform = Callable[[], float]  # a number in [0, 1)
Monotonic = Callable[[], float]

_MAX_DOUBLINGS = 60  # 2**60 is far past any cap; keeps the arithmetic finite


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """How long to wait after a failed attempt.

    After attempt ``n`` (1-based) the delay is drawn uniformly from
    ``[min_fraction * c, c]`` with ``c = min(cap, base * 2**(n-1))``, and is never below
    ``floor``. ``min_fraction`` 0 is full jitter (the default: clients that failed together
    come back spread out), 0.5 equal jitter. A server's ``Retry-After`` replaces the
    computed delay: capped at ``max_retry_after``, plus up to ``retry_after_jitter`` seconds
    so that clients told the same number do not return in the same millisecond.
    """

    base: float = 0.5
    cap: float = 30.0
    floor: float = 0.0
    min_fraction: float = 0.0
    max_retry_after: float = 60.0
    retry_after_jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= self.base <= self.cap:
            raise ValueError(f"backoff needs 0 <= floor <= base <= cap, got {self}")
        if not 0 <= self.min_fraction <= 1:
            raise ValueError(f"backoff min_fraction must be within [0, 1], got {self}")
        if self.max_retry_after < 0 or self.retry_after_jitter < 0:
            raise ValueError(f"backoff Retry-After bounds must not be negative, got {self}")

    def ceiling(self, attempt: int) -> float:
        """The largest computed delay after failed attempt number ``attempt`` (1-based)."""
        doublings = min(max(attempt, 1) - 1, _MAX_DOUBLINGS)
        return min(self.cap, self.base * 2.0**doublings)

    def delay(self, attempt: int, *, uniform: Uniform, retry_after: float | None = None) -> float:
        """The wait after failed attempt ``attempt``; ``retry_after``: what the server asked."""
        if retry_after is not None:
            honoured = min(max(retry_after, 0.0), self.max_retry_after)
            if self.retry_after_jitter > 0:
                honoured += self.retry_after_jitter * uniform()
            return max(self.floor, honoured)
        ceiling = self.ceiling(attempt)
        low = self.min_fraction * ceiling
        return max(self.floor, low + (ceiling - low) * uniform())


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How to wait between attempts, and when to stop trying."""

    backoff: Backoff = field(default_factory=Backoff)
    max_attempts: int | None = None  # tries in all, the first one included; None: no limit
    # No new attempt starts later than this many seconds after the first; None: no limit.
    max_elapsed: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1 (or None: no limit)")
        if self.max_elapsed is not None and self.max_elapsed < 0:
            raise ValueError("RetryPolicy.max_elapsed must not be negative (or None: no limit)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Pacing:
    """Time and chance, as the retry loop and the reflector use them; replaced in tests."""

    sleep: Sleep = asyncio.sleep
    uniform: Uniform = random.random
    monotonic: Monotonic = time.monotonic


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as ``on_failure`` sees it (called while the error is handled)."""

    error: Exception
    attempt: int  # 1-based
    delay: float | None  # the wait before the next attempt; None: giving up, error raised


class Abandoned(Exception):
    """:func:`retry` stopped because ``abandon()`` said the result is no longer needed."""


def _always(_error: Exception) -> bool:
    return True


def _no_retry_after(_error: Exception) -> float | None:
    return None


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    retriable: Callable[[Exception], bool] = _always,
    retry_after: Callable[[Exception], float | None] = _no_retry_after,
    on_failure: Callable[[Failure], None] | None = None,
    abandon: Callable[[], bool] | None = None,
    pacing: Pacing | None = None,
) -> T:
    """Await ``attempt()`` until it returns; return what it returned.

    An error that is not ``retriable``, or one after which ``policy`` allows no further
    attempt, is raised. ``retry_after(error)`` gives a server's requested delay (or None).
    ``on_failure`` hears of every failed attempt, retried or not. ``abandon()`` is asked
    before every attempt; when true, :class:`Abandoned` is raised. Cancellation is never
    retried. An exception raised by ``pacing.sleep`` ends the loop with that exception.
    """
    pace = pacing if pacing is not None else Pacing()
    started = pace.monotonic()
    number = 0
    while True:
        if abandon is not None and abandon():
            raise Abandoned
        number += 1
        try:
            return await attempt()
        except Exception as error:  # CancelledError is a BaseException: never caught here
            delay: float | None = None
            if retriable(error) and _may_try_again(policy, number=number):
                delay = policy.backoff.delay(
                    number, uniform=pace.uniform, retry_after=retry_after(error)
                )
                if not _starts_in_time(policy, started=started, now=pace.monotonic(), wait=delay):
                    delay = None
            if on_failure is not None:
                on_failure(Failure(error, number, delay))
            if delay is None:
                raise
        await pace.sleep(delay)


def _may_try_again(policy: RetryPolicy, *, number: int) -> bool:
    return policy.max_attempts is None or number < policy.max_attempts


def _starts_in_time(policy: RetryPolicy, *, started: float, now: float, wait: float) -> bool:
    return policy.max_elapsed is None or now + wait - started <= policy.max_elapsed
