"""Event aggregation and rate limiting (client-go's EventCorrelator rules) on a manual clock."""

from __future__ import annotations

from rmd.core.clock import ManualClock
from rmd.kube.eventcorrelation import (
    COMBINED_PREFIX,
    CorrelatorSettings,
    EventCorrelator,
    EventDraft,
    InvolvedObject,
)

POD = InvolvedObject("Pod", "tm-1-1", "uid-1")
OTHER_POD = InvolvedObject("Pod", "tm-1-2", "uid-2")


def draft(message: str = "lost", *, on: InvolvedObject = POD, reason: str = "Lost") -> EventDraft:
    return EventDraft(on, reason, message, type="Warning")


def test_the_same_event_within_the_window_is_one_series_with_a_growing_count() -> None:
    clock = ManualClock()
    correlator = EventCorrelator(clock=clock)
    first = correlator.observe(draft())
    clock.advance(30)
    second = correlator.observe(draft())
    assert first is not None
    assert second is not None
    assert second.series == first.series
    assert (first.count, second.count) == (1, 2)
    assert second.first_seen == first.first_seen
    assert second.last_seen == first.last_seen + 30


def test_another_message_object_or_reason_is_another_series() -> None:
    correlator = EventCorrelator(clock=ManualClock())
    series = {
        write.series
        for write in (
            correlator.observe(draft("a")),
            correlator.observe(draft("b")),
            correlator.observe(draft("a", on=OTHER_POD)),
            correlator.observe(draft("a", reason="Other")),
        )
        if write is not None
    }
    assert len(series) == 4


def test_after_a_quiet_window_the_same_event_starts_a_new_series() -> None:
    clock = ManualClock()
    correlator = EventCorrelator(clock=clock, settings=CorrelatorSettings(window=600))
    first = correlator.observe(draft())
    clock.advance(601)
    again = correlator.observe(draft())
    assert first is not None
    assert again is not None
    assert again.series != first.series
    assert again.count == 1


def test_a_storm_becomes_a_count_and_the_bucket_limits_writes() -> None:
    clock = ManualClock()
    settings = CorrelatorSettings(burst=5, refill_seconds=10)
    correlator = EventCorrelator(clock=clock, settings=settings)
    writes = [correlator.observe(draft()) for _ in range(1000)]
    sent = [write for write in writes if write is not None]
    assert len(sent) == 5  # the burst; every occurrence after it is only counted
    assert {write.series for write in sent} == {sent[0].series}
    assert correlator.waiting == 995
    assert correlator.flush() == []  # no token yet
    next_at = correlator.next_flush_at()
    assert next_at is not None
    assert next_at == clock.monotonic() + 10
    clock.advance(10)
    (flushed,) = correlator.flush()
    assert flushed.series == sent[0].series
    assert flushed.count == 1000  # nothing lost: the waiting occurrences are in the count
    assert correlator.waiting == 0
    assert correlator.next_flush_at() is None


def test_the_bucket_is_per_object() -> None:
    correlator = EventCorrelator(clock=ManualClock(), settings=CorrelatorSettings(burst=1))
    assert correlator.observe(draft()) is not None
    assert correlator.observe(draft()) is None
    assert correlator.observe(draft(on=OTHER_POD)) is not None


def test_many_messages_of_one_kind_combine_into_one_series() -> None:
    correlator = EventCorrelator(clock=ManualClock(), settings=CorrelatorSettings(max_similar=3))
    writes = [correlator.observe(draft(f"exit code {code}")) for code in range(8)]
    assert all(write is not None for write in writes)
    separate = {write.series for write in writes[:3] if write is not None}
    combined = [write for write in writes[3:] if write is not None]
    assert len(separate) == 3
    assert {write.series for write in combined} == {combined[0].series}
    assert combined[0].series not in separate
    assert [write.count for write in combined] == [1, 2, 3, 4, 5]
    assert combined[-1].draft.message == COMBINED_PREFIX + "exit code 7"


def test_the_number_of_series_kept_is_bounded() -> None:
    clock = ManualClock()
    correlator = EventCorrelator(
        clock=clock, settings=CorrelatorSettings(max_series=10, max_similar=1000)
    )
    first = correlator.observe(draft("m0"))
    for number in range(1, 20):
        correlator.observe(draft(f"m{number}", on=InvolvedObject("Pod", f"p{number}")))
    again = correlator.observe(draft("m0"))
    assert first is not None
    assert again is not None
    assert again.series != first.series  # forgotten: the oldest series went first


def test_a_count_that_waited_goes_out_with_the_next_write_and_waits_no_more() -> None:
    clock = ManualClock()
    correlator = EventCorrelator(
        clock=clock, settings=CorrelatorSettings(burst=1, refill_seconds=10)
    )
    assert correlator.observe(draft()) is not None
    assert correlator.observe(draft()) is None
    clock.advance(10)
    write = correlator.observe(draft())  # a token is back: this write carries all three
    assert write is not None
    assert write.count == 3
    assert correlator.waiting == 0
    assert correlator.flush() == []
    assert correlator.next_flush_at() is None
