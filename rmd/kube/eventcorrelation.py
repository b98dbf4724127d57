"""Aggregating and rate limiting Kubernetes Events, as client-go's EventCorrelator does (pure).

Three rules, all on an injected clock:

* **Count, not copies.** The same event (object, type, reason, message) seen again within
  ``window`` seconds of its last occurrence is the same Event object: its ``count`` and
  ``lastTimestamp`` are patched, no new object is created.
* **Similar events combine.** More than ``max_similar`` different messages for the same object,
  type and reason within the window become one Event, "(combined from similar events): <the
  latest message>", counted like any other.
* **A token bucket per object.** Every write (create or patch) for an object takes a token;
  ``burst`` tokens, one more every ``refill_seconds``. An occurrence that finds no token is
  not lost: its count waits and goes out with the next write of that Event (the next
  occurrence that finds a token, or :meth:`EventCorrelator.flush` once a token is back).

The writer (:mod:`rmd.kube.events`) turns an :class:`EventWrite` into a create (a new series)
or a patch (a known one).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from rmd.core.clock import Clock

EventType = Literal["Normal", "Warning"]
COMBINED_PREFIX = "(combined from similar events): "


@dataclass(frozen=True, slots=True)
class InvolvedObject:
    """The object an Event is about (``involvedObject``): a pod, or the JobManager Deployment."""

    kind: str
    name: str
    uid: str | None = None
    api_version: str = "v1"


@dataclass(frozen=True, slots=True)
class EventDraft:
    """One occurrence: what happened to which object."""

    involved: InvolvedObject
    reason: str  # CamelCase, e.g. TaskManagerRegistered
    message: str
    type: EventType = "Normal"


@dataclass(frozen=True, slots=True)
class EventWrite:
    """What to write now: the whole Event of one series (a create when its series is new to
    the writer, else a patch of count and lastTimestamp)."""

    series: int  # one Event object per series
    draft: EventDraft  # its message is the combined one when similar events were combined
    count: int
    first_seen: float  # wall-clock seconds since the epoch
    last_seen: float


@dataclass(frozen=True, slots=True)
class CorrelatorSettings:
    window: float = 600.0  # client-go: maxIntervalInSeconds
    max_similar: int = 10  # client-go: maxEvents of the aggregator
    burst: int = 25  # client-go: defaultSpamBurst
    refill_seconds: float = 300.0  # client-go: defaultSpamQPS = 1/300
    max_series: int = 4096  # client-go: maxLruCacheEntries

    def __post_init__(self) -> None:
        if self.burst < 1 or self.refill_seconds <= 0 or self.window <= 0:
            raise ValueError("CorrelatorSettings: burst ≥ 1, refill_seconds > 0, window > 0")


_Key = tuple[InvolvedObject, str, str, str]  # object, type, reason, message
_ObjectKey = tuple[str, str]  # kind, name


@dataclass(slots=True)
class _Series:
    series: int
    draft: EventDraft
    count: int
    first_seen: float
    last_seen: float
    written: int = 0  # the count the last write carried


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # monotonic time of ``tokens``


@dataclass(slots=True)
class _Similar:
    messages: dict[str, float] = field(default_factory=dict)  # message → last seen (monotonic)


class EventCorrelator:
    def __init__(self, *, clock: Clock, settings: CorrelatorSettings | None = None) -> None:
        self._clock = clock
        self._settings = settings or CorrelatorSettings()
        self._series: OrderedDict[_Key, _Series] = OrderedDict()  # least recently seen first
        self._seen_at: dict[_Key, float] = {}  # monotonic time of the last occurrence
        self._unwritten: dict[_Key, _Series] = {}  # series whose count waits for a token
        self._buckets: dict[_ObjectKey, _Bucket] = {}
        self._similar: dict[tuple[InvolvedObject, str, str], _Similar] = {}  # by last use
        self._ids = itertools.count(1)

    def observe(self, draft: EventDraft) -> EventWrite | None:
        """One occurrence; the write to make now, or None when the object's bucket is empty
        (the count is kept for a later write)."""
        now = self._clock.monotonic()
        wall = self._clock.wall()
        key_message, draft = self._combined(draft, now=now)
        key: _Key = (draft.involved, draft.type, draft.reason, key_message)
        entry = self._series.get(key)
        if entry is None or now - self._seen_at[key] > self._settings.window:
            entry = _Series(next(self._ids), draft, count=1, first_seen=wall, last_seen=wall)
            self._series[key] = entry
        else:
            entry.count += 1
            entry.last_seen = wall
            entry.draft = draft  # a combined series shows the latest message
        self._series.move_to_end(key)
        self._seen_at[key] = now
        self._evict()
        write = self._write(entry, now=now)
        if write is None:
            self._unwritten[key] = entry
        elif self._unwritten.get(key) is entry:
            del self._unwritten[key]  # its waiting count went out with this write
        return write

    def flush(self) -> list[EventWrite]:
        """Writes for counts that waited for a token and may go out now."""
        now = self._clock.monotonic()
        writes: list[EventWrite] = []
        for key, entry in list(self._unwritten.items()):
            write = self._write(entry, now=now)
            if write is not None:
                writes.append(write)
                del self._unwritten[key]
        return writes

    def next_flush_at(self) -> float | None:
        """Monotonic time when a waiting count gets a token; None when nothing waits."""
        times = [self._refilled_at(entry.draft.involved) for entry in self._unwritten.values()]
        return min(times, default=None)

    @property
    def waiting(self) -> int:
        """Occurrences not yet written (their bucket was empty)."""
        return sum(entry.count - entry.written for entry in self._unwritten.values())

    # ------------------------------------------------------------------ internals
    def _write(self, entry: _Series, *, now: float) -> EventWrite | None:
        if not self._take_token(entry.draft.involved, now=now):
            return None
        entry.written = entry.count
        return EventWrite(
            series=entry.series,
            draft=entry.draft,
            count=entry.count,
            first_seen=entry.first_seen,
            last_seen=entry.last_seen,
        )

    def _take_token(self, involved: InvolvedObject, *, now: float) -> bool:
        settings = self._settings
        key = (involved.kind, involved.name)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(settings.burst), at=now)
        refill = (now - bucket.at) / settings.refill_seconds
        bucket.tokens = min(float(settings.burst), bucket.tokens + refill)
        bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _refilled_at(self, involved: InvolvedObject) -> float:
        bucket = self._buckets.get((involved.kind, involved.name))
        if bucket is None or bucket.tokens >= 1.0:
            return self._clock.monotonic()
        return bucket.at + (1.0 - bucket.tokens) * self._settings.refill_seconds

    def _combined(self, draft: EventDraft, *, now: float) -> tuple[str, EventDraft]:
        """The message that keys the series, and the draft to show: the draft itself, or,
        once its object, type and reason have too many messages, one combined series."""
        kind = (draft.involved, draft.type, draft.reason)
        similar = self._similar.pop(kind, None) or _Similar()
        self._similar[kind] = similar  # most recently used last
        window = self._settings.window
        similar.messages = {m: t for m, t in similar.messages.items() if now - t <= window}
        similar.messages[draft.message] = now
        if len(similar.messages) <= self._settings.max_similar:
            return draft.message, draft
        combined = EventDraft(
            draft.involved, draft.reason, COMBINED_PREFIX + draft.message, type=draft.type
        )
        return COMBINED_PREFIX, combined

    def _evict(self) -> None:
        limit = self._settings.max_series
        while len(self._series) > limit:
            key, _ = self._series.popitem(last=False)
            del self._seen_at[key]
            self._unwritten.pop(key, None)
        while len(self._similar) > limit:
            del self._similar[next(iter(self._similar))]
        while len(self._buckets) > limit:
            del self._buckets[next(iter(self._buckets))]
