"""The benchmark's arithmetic: kube-apiserver's request counts and latency percentiles."""

from __future__ import annotations

import pytest

from bench.apiserver_requests import RequestKind, difference, of_resources, parse_counts, per_unit
from bench.reaction import latencies


def _sample(verb: str, resource: str, value: int, *, code: str = "201", **more: str) -> str:
    labels = {
        "code": code,
        "component": "apiserver",
        "dry_run": "",
        "group": "",
        "resource": resource,
        "scope": "namespace",
        "subresource": "",
        "verb": verb,
        "version": "v1",
        **more,
    }
    text = ",".join(f'{key}="{label}"' for key, label in labels.items())
    return f"apiserver_request_total{{{text}}} {value}"


SCRAPE = "\n".join(
    [
        "# HELP apiserver_request_total [STABLE] Counter of apiserver requests.",
        "# TYPE apiserver_request_total counter",
        _sample("POST", "pods", 7),
        _sample("POST", "pods", 2, code="409"),
        _sample("POST", "pods", 9, subresource="binding"),
        _sample("POST", "events", 4, group="events.k8s.io"),
        _sample("GET", "", 30, code="200", subresource="/metrics"),
        "# HELP apiserver_request_duration_seconds Response latency.",
        "# TYPE apiserver_request_duration_seconds histogram",
        _sample("POST", "pods", 9).replace("_total", "_duration_seconds_count"),
        "",
    ]
)


def test_counts_are_summed_over_codes_by_verb_and_resource() -> None:
    counts = parse_counts(SCRAPE)
    assert counts == {
        RequestKind("POST", "pods"): 9,
        RequestKind("POST", "pods/binding"): 9,
        RequestKind("POST", "events.k8s.io/events"): 4,
    }  # non-resource requests (/metrics) and other metrics are left out


def test_a_difference_keeps_what_grew_and_divides_per_unit() -> None:
    before = parse_counts(SCRAPE)
    after = before.copy()
    after[RequestKind("POST", "pods")] += 6
    after[RequestKind("DELETE", "pods")] += 3
    grown = difference(after, before)
    assert grown == {RequestKind("POST", "pods"): 6, RequestKind("DELETE", "pods"): 3}
    assert per_unit(grown, 3) == {"DELETE pods": 1.0, "POST pods": 2.0}


def test_rows_are_selected_by_resource_with_their_subresources_and_groups() -> None:
    select = of_resources("pods", "events")
    assert select(RequestKind("PATCH", "pods/status"))
    assert select(RequestKind("POST", "events.k8s.io/events"))
    assert not select(RequestKind("PUT", "coordination.k8s.io/leases"))


def test_percentiles_are_by_nearest_rank() -> None:
    figures = latencies([index / 1000 for index in range(100, 0, -1)])  # 1..100 ms
    assert (figures.trials, figures.p50_ms, figures.p99_ms, figures.max_ms) == (100, 50, 99, 100)
    assert figures.mean_ms == 50.5
    fifty = latencies([index / 1000 for index in range(1, 51)])
    assert (fifty.p50_ms, fifty.p99_ms) == (25, 50)  # over 50 trials p99 is the largest


def test_no_trials_is_an_error() -> None:
    with pytest.raises(ValueError, match="no trials"):
        latencies([])
