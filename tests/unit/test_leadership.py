"""The pure leader election (rmd.core.leadership) on a manual clock: who acquires, renews,
waits, takes over and steps down, and when a leader may still write."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rmd.core.clock import ManualClock
from rmd.core.leadership import Election, ElectionTimings, Intent, LeaseRecord

TIMINGS = ElectionTimings(lease_duration=15.0, renew_deadline=15.0, retry_period=5.0)


def candidate(name: str, clock: ManualClock, timings: ElectionTimings = TIMINGS) -> Election:
    return Election(identity=name, url=f"http://{name}:8090", timings=timings, clock=clock)


def stored(record: LeaseRecord, version: int) -> LeaseRecord:
    """The record as the API server returns it after a write: a new resourceVersion."""
    return replace(record, version=str(version))


def lead(election: Election, clock: ManualClock, *, existing: LeaseRecord | None = None) -> None:
    election.observe(existing)
    step = election.next_step()
    assert step.record is not None
    assert election.written(stored(step.record, 1), sent_at=clock.monotonic())


def test_no_lease_means_create_it_holding_it() -> None:
    clock = ManualClock()
    a = candidate("a", clock)
    a.observe(None)
    step = a.next_step()
    assert step.intent is Intent.CREATE
    assert step.record == LeaseRecord(
        holder="a", lease_duration=15.0, transitions=0, leader_url="http://a:8090", version=""
    )
    assert not a.may_write()  # nothing written yet
    assert a.written(stored(step.record, 1), sent_at=clock.monotonic())  # became leader
    assert a.may_write()
    assert a.leader_url() == "http://a:8090"


def test_a_held_lease_makes_the_other_wait_until_it_stays_unrenewed_for_the_lease_duration() -> (
    None
):
    clock = ManualClock()
    held = LeaseRecord(
        holder="a", lease_duration=15.0, transitions=0, leader_url="http://a:8090", version="7"
    )
    b = candidate("b", clock)
    b.observe(held)
    assert b.next_step().intent is Intent.WAIT
    assert b.leader_url() == "http://a:8090"
    clock.advance(10)
    b.observe(held)  # unchanged: the clock keeps running from when b first saw it
    assert b.next_step().intent is Intent.WAIT
    assert b.seconds_to_next_step() == pytest.approx(5.0)
    clock.advance(4.9)
    b.observe(held)
    assert b.next_step().intent is Intent.WAIT
    assert b.seconds_to_next_step() == pytest.approx(0.1)  # wakes when it would expire
    clock.advance(0.1)
    b.observe(held)
    step = b.next_step()
    assert step.intent is Intent.ACQUIRE
    assert step.record is not None
    assert (step.record.holder, step.record.transitions, step.record.version) == ("b", 1, "7")
    assert b.leader_url() is None  # expired: no leader known until b's write lands


def test_a_renewal_seen_restarts_the_followers_count() -> None:
    clock = ManualClock()
    held = LeaseRecord(holder="a", lease_duration=15.0, transitions=0, leader_url=None, version="7")
    b = candidate("b", clock)
    b.observe(held)
    clock.advance(14)
    b.observe(replace(held, version="8"))  # a renewed: a new resourceVersion
    clock.advance(14)
    b.observe(replace(held, version="8"))
    assert b.next_step().intent is Intent.WAIT
    clock.advance(1)
    b.observe(replace(held, version="8"))
    assert b.next_step().intent is Intent.ACQUIRE


def test_the_followers_judge_by_their_own_clock_not_the_leaders() -> None:
    # Nothing in the record says when it was renewed; only its changes, as b sees them.
    clock = ManualClock()
    b = candidate("b", clock)
    clock.advance(3600)
    b.observe(
        LeaseRecord(holder="a", lease_duration=15.0, transitions=4, leader_url=None, version="1")
    )
    assert b.next_step().intent is Intent.WAIT  # first seen now: valid for 15 s from now


def test_a_released_lease_is_taken_at_once() -> None:
    clock = ManualClock()
    a, b = candidate("a", clock), candidate("b", clock)
    lead(a, clock)
    released = a.release_record()
    assert released is not None
    assert (released.holder, released.lease_duration, released.leader_url) == ("", 1.0, None)
    b.observe(stored(released, 2))
    step = b.next_step()
    assert step.intent is Intent.ACQUIRE
    assert step.record is not None
    assert step.record.transitions == 1
    assert candidate("c", clock).release_record() is None  # not held: nothing to release


def test_the_leader_renews_and_may_write_only_within_the_window_after_its_last_renewal() -> None:
    clock = ManualClock()
    a = candidate("a", clock)
    lead(a, clock)
    assert TIMINGS.write_window == pytest.approx(12.0)  # 15 s lease, 20 % kept free
    clock.advance(5)
    step = a.next_step()
    assert step.intent is Intent.RENEW
    assert step.record is not None
    assert (step.record.holder, step.record.transitions, step.record.version) == ("a", 0, "1")
    sent = clock.monotonic()
    clock.advance(0.5)  # the renewal's round trip
    assert not a.written(stored(step.record, 2), sent_at=sent)  # still leader: no transition
    clock.advance(11.4)  # 11.9 s after the renewal was sent
    assert a.may_write()
    assert not a.must_step_down()
    clock.advance(0.1)  # 12 s: a follower's 15 s may have started as early as the send
    assert not a.may_write()
    assert a.must_step_down()
    assert a.leader_url() is None


def test_a_shorter_renew_deadline_closes_the_window_sooner() -> None:
    timings = ElectionTimings(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)
    assert timings.write_window == 10.0


def test_a_leader_that_reads_another_holder_is_deposed_at_once() -> None:
    clock = ManualClock()
    a = candidate("a", clock)
    lead(a, clock)
    a.observe(
        LeaseRecord(holder="b", lease_duration=15.0, transitions=1, leader_url="u", version="9")
    )
    assert not a.may_write()
    assert a.must_step_down()
    assert not a.leading
    # Even a later write of its own does not make it leader again: it must restart.
    assert not a.written(
        LeaseRecord(holder="a", lease_duration=15.0, transitions=2, leader_url=None, version="10"),
        sent_at=clock.monotonic(),
    )
    assert not a.may_write()


def test_a_write_that_returns_another_holder_makes_no_leader() -> None:
    clock = ManualClock()
    a = candidate("a", clock)
    a.observe(None)
    other = LeaseRecord(
        holder="b", lease_duration=15.0, transitions=0, leader_url=None, version="3"
    )
    assert not a.written(other, sent_at=clock.monotonic())
    assert not a.may_write()
    assert a.next_step().intent is Intent.WAIT


def test_a_step_needs_a_read_first_and_timings_must_leave_room_to_renew() -> None:
    with pytest.raises(RuntimeError, match="read the Lease"):
        candidate("a", ManualClock()).next_step()
    with pytest.raises(ValueError, match="retry period < renew deadline <= lease duration"):
        ElectionTimings(lease_duration=10.0, renew_deadline=15.0, retry_period=5.0)
    with pytest.raises(ValueError, match="retry period < renew deadline"):
        ElectionTimings(lease_duration=15.0, renew_deadline=5.0, retry_period=5.0)


def test_of_two_candidates_exactly_one_leads_and_the_other_takes_over_after_a_silence() -> None:
    clock = ManualClock()
    a, b = candidate("a", clock), candidate("b", clock)
    version = 0
    lease: LeaseRecord | None = None

    def round_of(election: Election) -> None:
        nonlocal lease, version
        election.observe(lease)
        step = election.next_step()
        if step.record is None:
            return
        expected = "" if lease is None else lease.version
        if step.record.version != expected:
            return  # 409: the precondition failed
        version += 1
        lease = stored(step.record, version)
        election.written(lease, sent_at=clock.monotonic())

    for _ in range(10):
        round_of(a)
        round_of(b)
        assert [e.may_write() for e in (a, b)] == [True, False]
        clock.advance(5)
    # a stops (killed) 5 s after its last renewal, which b saw at once: b takes over when
    # that renewal is 15 s old by b's clock, waking exactly then rather than a period later.
    taken_over_after = 0.0
    while not b.may_write():
        round_of(b)
        if not b.may_write():
            wait = b.seconds_to_next_step()
            clock.advance(wait)
            taken_over_after += wait
    assert taken_over_after == pytest.approx(10.0)
    assert not a.may_write()  # its own window closed long before
    assert lease is not None
    assert lease.transitions == 1
