"""Exponential back-off with full jitter, for retrying calls to an unreachable daemon.

Full jitter (a uniform pick between 0 and the exponential ceiling) spreads hundreds of
TaskManagers that lost the daemon at the same moment, so they do not come back in lock-step.
A small floor keeps an unlucky pick near 0 from turning the retry loop into a spin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_MAX_DOUBLINGS = 60  # 2**60 is far past any cap; keeps the arithmetic finite


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffPolicy:
    base: float = 0.5  # ceiling of the first retry's delay, seconds
    cap: float = 30.0  # no delay is longer than this
    floor: float = 0.05  # no delay is shorter than this

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.base <= self.cap:
            raise ValueError(f"back-off needs 0 < floor <= base <= cap, got {self}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based)."""
        doublings = min(max(attempt, 1) - 1, _MAX_DOUBLINGS)
        return min(self.cap, self.base * 2.0**doublings)

    def delay(self, attempt: int, *, uniform: Callable[[], float]) -> float:
        """A delay in [floor, ceiling(attempt)]; ``uniform()`` returns a number in [0, 1)."""
        return max(self.floor, uniform() * self.ceiling(attempt))
