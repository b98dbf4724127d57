"""Leader election through a Lease, the pure part: given what the Lease says, the clock and
who this daemon is — create the Lease, acquire it, renew it, wait, or step down.

Modelled on client-go's ``leaderelection``:

* A follower never trusts the other side's clock. It notes *when it saw* the Lease record
  change (its own monotonic clock) and takes over only once the record has stayed the same
  for the record's ``leaseDurationSeconds`` — a leader that stopped renewing, or a Lease
  released with an empty holder (then at once).
* Every write carries the ``resourceVersion`` it read (a precondition): of two candidates
  writing the same version one gets 409 and reads again.
* The leader renews every retry period. It may create or delete pods only while
  ``now < last successful renewal sent + write window``, the window being the renew
  deadline but at most :data:`SAFETY_MARGIN` short of the lease duration, so the leader
  has stopped writing before any follower can take over (clock rates, request latency).
  Past the window, or once a read shows another holder, it must step down.

The I/O loop is :mod:`rmd.kube.lease`; the times it gives in are monotonic seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from rmd.core.clock import Clock

__all__ = [
    "SAFETY_MARGIN",
    "Election",
    "ElectionTimings",
    "Intent",
    "LeaseRecord",
    "Step",
]

# The part of the lease duration a leader keeps free between its last write and the
# earliest moment a follower may take over.
SAFETY_MARGIN = 0.2
# The shortest wait between two steps of the loop.
MIN_STEP_WAIT = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class ElectionTimings:
    """Flink's ``high-availability.kubernetes.leader-election.*`` durations, in seconds."""

    lease_duration: float
    renew_deadline: float
    retry_period: float

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline <= self.lease_duration:
            raise ValueError(
                "expected 0 < retry period < renew deadline <= lease duration, got "
                f"{self.retry_period} s, {self.renew_deadline} s, {self.lease_duration} s"
            )

    @property
    def write_window(self) -> float:
        """How long after sending its last successful renewal a leader may still write."""
        return min(self.renew_deadline, self.lease_duration * (1 - SAFETY_MARGIN))


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRecord:
    """What the Lease says: its holder (``""``: nobody), for how long, how often leadership
    changed hands, the holder's HTTP address, and the object's resourceVersion (``""`` for
    a record not yet written)."""

    holder: str
    lease_duration: float
    transitions: int
    leader_url: str | None
    version: str


class Intent(StrEnum):
    CREATE = "create"  # no Lease exists: create it, holding it
    ACQUIRE = "acquire"  # the Lease is free or expired: take it (transitions + 1)
    RENEW = "renew"  # it is mine: renew it
    WAIT = "wait"  # someone else holds a valid Lease


@dataclass(frozen=True, slots=True)
class Step:
    """What to do now; ``record`` is what to write (CREATE, ACQUIRE, RENEW), its ``version``
    the precondition."""

    intent: Intent
    record: LeaseRecord | None = None


class Election:
    """One candidate's view of the election. Feed it every read (:meth:`observe`) and every
    successful write (:meth:`written`); ask it what to do (:meth:`next_step`) and whether it
    may write (:meth:`may_write`)."""

    def __init__(self, *, identity: str, url: str, timings: ElectionTimings, clock: Clock) -> None:
        if not identity:
            raise ValueError("the candidate's identity must not be empty")
        self.identity = identity
        self.url = url
        self.timings = timings
        self._clock = clock
        self._observed: LeaseRecord | None = None
        self._read_once = False
        self._observed_at = 0.0  # when the observed record last changed, by my clock
        self._renew_sent_at: float | None = None  # my last successful write, when it was sent
        self._leading = False
        self._deposed = False

    # ------------------------------------------------------------------ inputs
    def observe(self, record: LeaseRecord | None) -> None:
        """A read of the Lease returned ``record`` (None: there is no Lease)."""
        now = self._clock.monotonic()
        previous = self._observed
        if (
            not self._read_once
            or record is None
            or previous is None
            or (record.version, record.holder) != (previous.version, previous.holder)
        ):
            self._observed_at = now
        self._observed = record
        self._read_once = True
        if self._leading and (record is None or record.holder != self.identity):
            self._leading = False
            self._deposed = True  # someone else holds it, or it was deleted

    def written(self, record: LeaseRecord, *, sent_at: float) -> bool:
        """My write (sent at monotonic ``sent_at``) succeeded; ``record`` is the Lease as the
        API server returned it. True when this made me the leader."""
        self.observe(record)
        if record.holder != self.identity:
            return False
        self._renew_sent_at = sent_at
        became_leader = not self._leading and not self._deposed
        if not self._deposed:
            self._leading = True
        return became_leader

    # ------------------------------------------------------------------ decisions
    def next_step(self) -> Step:
        """What to do with the Lease now, given the last read."""
        if not self._read_once:
            raise RuntimeError("read the Lease before asking what to do with it")
        record = self._observed
        if record is None:
            return Step(
                Intent.CREATE,
                LeaseRecord(
                    holder=self.identity,
                    lease_duration=self.timings.lease_duration,
                    transitions=0,
                    leader_url=self.url,
                    version="",
                ),
            )
        if record.holder == self.identity:
            return Step(Intent.RENEW, self._mine(record, transitions=record.transitions))
        if record.holder and not self._expired(record):
            return Step(Intent.WAIT)
        return Step(Intent.ACQUIRE, self._mine(record, transitions=record.transitions + 1))

    def may_write(self) -> bool:
        """The cheap local check before every create or delete: leading, and the last renewal
        recent enough that no follower can have taken over yet."""
        return (
            self._leading
            and self._renew_sent_at is not None
            and self._clock.monotonic() < self._renew_sent_at + self.timings.write_window
        )

    def must_step_down(self) -> bool:
        """Was leader and is no more: another holder, or no renewal within the write window."""
        return self._deposed or (self._leading and not self.may_write())

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def deposed(self) -> bool:
        """A read or write showed another holder (or no Lease) while I led."""
        return self._deposed

    def leader_url(self) -> str | None:
        """Where the leader answers: mine while I may write; else the holder's, while its
        Lease is valid; else None (no leader known)."""
        if self.may_write():
            return self.url
        record = self._observed
        if record is None or not record.holder or record.holder == self.identity:
            return None
        return None if self._expired(record) else record.leader_url

    def seconds_to_next_step(self) -> float:
        """How long to wait before the next read or renewal: a retry period; a follower
        waits only until the holder's Lease would expire, if that is sooner."""
        wait = self.timings.retry_period
        record = self._observed
        if not self._leading and record is not None and record.holder:
            expires_in = self._observed_at + record.lease_duration - self._clock.monotonic()
            wait = min(wait, expires_in)
        return max(wait, MIN_STEP_WAIT)

    def release_record(self) -> LeaseRecord | None:
        """On a graceful stop: the record that hands the Lease back (no holder, 1 s), so a
        follower takes over at once; None when I do not hold it."""
        record = self._observed
        if not self._leading or record is None or record.holder != self.identity:
            return None
        return replace(record, holder="", lease_duration=1.0, leader_url=None)

    # ------------------------------------------------------------------ helpers
    def _expired(self, record: LeaseRecord) -> bool:
        return self._clock.monotonic() >= self._observed_at + record.lease_duration

    def _mine(self, record: LeaseRecord, *, transitions: int) -> LeaseRecord:
        return replace(
            record,
            holder=self.identity,
            lease_duration=self.timings.lease_duration,
            transitions=transitions,
            leader_url=self.url,
        )
