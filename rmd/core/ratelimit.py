"""The start-failure rate limit (Flink's ``resourcemanager.start-worker.max-failure-rate``).

Flink counts start failures (create errors, pods that die or time out before registering) in
a trailing minute; when the count reaches the limit it creates no pod for
``resourcemanager.start-worker.retry-interval`` and then requests everything that is missing
at once — so with every pod crashing it keeps creating far more pods than the limit.

This limiter keeps Flink's trip rule and first pause, and bounds the storm. Once it has
tripped, it stays careful until a TaskManager registers again:

* the pods still on their way (created, not registered) count against the limit too:
  ``failures in the window + in flight + new <= limit`` — no probe beyond it: a failure must
  leave the trailing minute before another pod may start;
* each further trip doubles the pause (``retry_interval``, twice that, four times, ... up to
  the window length).

So with every pod failing, creations in any minute stay within the limit (plus what was in
flight when it first tripped), and one healthy registration brings normal speed back.
"""

from __future__ import annotations

import math
from collections import deque


class StartFailureLimiter:
    def __init__(
        self,
        *,
        max_failures_per_minute: float,
        retry_interval: float,
        window: float = 60.0,
    ) -> None:
        if retry_interval < 0 or window <= 0:
            raise ValueError("retry_interval must be >= 0 and window > 0")
        self._limit = max_failures_per_minute
        self._retry_interval = retry_interval
        self._window = window
        self._max_pause = max(retry_interval, window)
        self._failures: deque[float] = deque()
        self._paused_until: float | None = None
        self._consecutive_trips = 0  # since the last successful registration

    @property
    def limit(self) -> float:
        return self._limit

    def record_failure(self, now: float) -> float | None:
        """Count one start failure; the end of the new pause when this one trips the limit."""
        self._prune(now)
        self._failures.append(now)
        if self.paused_until(now) is not None or len(self._failures) < self._limit:
            return None
        pause = min(self._retry_interval * 2**self._consecutive_trips, self._max_pause)
        self._consecutive_trips += 1
        self._paused_until = now + pause
        return self._paused_until

    def record_success(self) -> None:
        """A TaskManager registered: back to full speed; the next trip pauses the shortest."""
        self._consecutive_trips = 0

    @property
    def careful(self) -> bool:
        """Tripped since the last successful registration."""
        return self._consecutive_trips > 0

    @property
    def engaged(self) -> bool:
        """Paused or careful: how many pods may start depends on time alone."""
        return self._paused_until is not None or self.careful

    def failures_in_window(self, now: float) -> int:
        self._prune(now)
        return len(self._failures)

    def paused_until(self, now: float) -> float | None:
        """The end of the current pause, None when not paused."""
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
        return self._paused_until

    def creation_allowance(self, *, now: float, in_flight: int) -> int | None:
        """How many pods may be created now; None = no limit.

        ``in_flight`` is the number of pods created (or adopted) that have not registered yet.
        """
        if self.paused_until(now) is not None:
            return 0
        if not self.careful:
            return None
        # No probe beyond the limit: a failure must leave the window before another pod may
        # start, so creations per trailing minute stay within the limit while every start
        # fails (a limit below one still lets one pod start once the window is empty).
        budget = max(1, math.floor(self._limit))
        return max(0, budget - self.failures_in_window(now) - in_flight)

    def next_deadline(self, now: float) -> float | None:
        """When the allowance can grow by time alone (the pause ends, or — while careful — a
        failure leaves the window); always later than ``now``."""
        paused_until = self.paused_until(now)
        if paused_until is not None:
            return paused_until
        if self.careful and self.failures_in_window(now):
            return self._failures[0] + self._window
        return None

    def _prune(self, now: float) -> None:
        horizon = now - self._window
        while self._failures and self._failures[0] <= horizon:
            self._failures.popleft()
