"""Whether the API server answers pod writes: an API server whose storage (etcd) hangs still
accepts connections and reads from its watch cache, but leaves creates and deletes
unanswered until they time out. Nothing else shows that: the watch stays healthy.

:class:`WriteHealth` is told when each create/delete attempt is sent and how it ended; writes
count as unanswered when one has waited ``slow_after`` seconds without an answer, or when
``timeouts_in_a_row`` attempts in a row timed out with no answer since. Any answer — a
success or an HTTP error status, which is an answer too — clears it. A connection that
failed is neither (that is an unreachable API server, said elsewhere). Pure: time comes from
the injected clock.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from rmd.core.clock import Clock

__all__ = ["SLOW_WRITE", "TIMEOUTS_IN_A_ROW", "UnansweredWrites", "WriteHealth"]

# A pod create or delete answers within a second on a healthy API server; one that has
# waited this long is hanging.
SLOW_WRITE = 10.0
TIMEOUTS_IN_A_ROW = 2


@dataclass(frozen=True, slots=True)
class UnansweredWrites:
    """Pod writes the API server leaves unanswered."""

    since: float  # monotonic: when the oldest unanswered write was sent
    waiting: int  # attempts in flight now
    timed_out: int  # attempts in a row that timed out

    def detail(self, *, now: float) -> str:
        return (
            f"the Kubernetes API server has not answered pod creates/deletes for "
            f"{now - self.since:.0f} s ({self.timed_out} timed out in a row, {self.waiting} "
            f"waiting): it accepts requests but does not complete writes — check its storage "
            f"(etcd) and its log"
        )


class WriteHealth:
    def __init__(
        self,
        *,
        clock: Clock,
        slow_after: float = SLOW_WRITE,
        timeouts_in_a_row: int = TIMEOUTS_IN_A_ROW,
    ) -> None:
        if not slow_after > 0:
            raise ValueError(f"slow_after must be positive, not {slow_after!r}")
        if timeouts_in_a_row < 1:
            raise ValueError(f"timeouts_in_a_row must be at least 1, not {timeouts_in_a_row!r}")
        self._clock = clock
        self._slow_after = slow_after
        self._timeouts_needed = timeouts_in_a_row
        self._tokens = itertools.count()
        self._in_flight: dict[int, float] = {}
        self._timed_out = 0
        self._first_timed_out_sent: float | None = None

    def sent(self) -> int:
        """A write attempt goes out; pass the token to exactly one of the outcomes."""
        token = next(self._tokens)
        self._in_flight[token] = self._clock.monotonic()
        return token

    def answered(self, token: int) -> None:
        """The API server answered (any HTTP status): it completes writes."""
        self._in_flight.pop(token, None)
        self._timed_out = 0
        self._first_timed_out_sent = None

    def timed_out(self, token: int) -> None:
        sent_at = self._in_flight.pop(token, None)
        if sent_at is None:
            return
        self._timed_out += 1
        if self._first_timed_out_sent is None or sent_at < self._first_timed_out_sent:
            self._first_timed_out_sent = sent_at

    def failed(self, token: int) -> None:
        """No answer for another reason (connection refused or reset): not counted."""
        self._in_flight.pop(token, None)

    def unanswered(self) -> UnansweredWrites | None:
        """The writes left unanswered now; None while the API server answers writes."""
        now = self._clock.monotonic()
        oldest = min(self._in_flight.values(), default=None)
        starts = [t for t in (oldest, self._first_timed_out_sent) if t is not None]
        hanging = oldest is not None and now - oldest >= self._slow_after
        if not (hanging or self._timed_out >= self._timeouts_needed):
            return None
        return UnansweredWrites(
            since=min(starts), waiting=len(self._in_flight), timed_out=self._timed_out
        )
