"""The side-by-side benchmark's pure parts: what the pod census counts, and the table."""

from __future__ import annotations

from typing import Any, cast

from bench.flink_side_by_side import Figures, Registrations, _window, table
from bench.scale_out import PodCensus


def _census() -> PodCensus:
    return PodCensus(cast(Any, None), "ns", "flink-x")  # no API calls: events fed by hand


def test_the_census_counts_live_pods_their_peak_and_when_each_went() -> None:
    census = _census()
    census._note("ADDED", {"name": "a"})
    census._note("ADDED", {"name": "b"})
    census._note("MODIFIED", {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"})
    assert census.alive == {"b"}
    assert census.peak == 2
    assert set(census.deleting) == {"a"}
    gone = census.deleting["a"]
    census._note("DELETED", {"name": "a"})
    assert census.deleting["a"] == gone, "the deletion's start counts, not the removal"
    assert census.seen == {"a", "b"}
    census.reset_peak()
    assert census.peak == 1
    census._note("ADDED", {"name": "c"})
    assert census.peak == 2


def test_wasted_pods_are_those_flink_never_listed() -> None:
    census = _census()
    for name in ("a", "b", "c"):
        census._note("ADDED", {"name": name})
    registrations = Registrations(cast(Any, None), ever={"b", "c"})
    window = _window(census, registrations, before={"a"})
    assert window.created == ["b", "c"]
    assert window.wasted == []
    census._note("ADDED", {"name": "d"})
    assert _window(census, registrations, before={"a"}).wasted == ["d"]


def test_the_table_shows_every_scenario_for_every_variant() -> None:
    variants = []
    for name in ("native", "rmd", "rmd-spare"):
        figures = Figures(variant=name, submit_to_running_s=[20.0, 21.0])
        figures.submit_pods_created = [2, 2]
        figures.submit_pods_wasted = [0, 0]
        figures.pod_to_registered_s = [9.5, 8.25, 10.75]
        figures.cancel_to_released_s = 11.0
        figures.delete_to_running_s = 15.0
        figures.delete_pods_created, figures.delete_pods_wasted = 2, 1
        figures.kill_to_running_s, figures.kill_peak_pods = 40.0, 4
        figures.kill_pods_created, figures.kill_pods_wasted = 2, 0
        variants.append(figures.__dict__)
    report = {
        "machine": {"cpus": 2, "load_average": [1.0, 2.0, 3.0]},
        "machine_after": {"load_average": [2.0, 2.0, 2.0]},
        "job": {"flink": "2.3.0"},
        "variants": variants,
    }
    text = table(report)
    for label in ("Flink native", "rmd + 1 warm spare", "(b) cancel", "(d) peak pods alive"):
        assert label in text
    assert "20.0 / 21.0" in text
    assert "(a) pod created → listed by Flink, s" in text
    assert "8.25 to 10.75" in text
    assert "2 (1)" in text
    assert "load average [1.0, 2.0, 3.0]" in text
