"""The Grafana dashboard: generated, current, covering what operators ask, and its PromQL
names read right (the integration test compares them with a real scrape)."""

from __future__ import annotations

import json

import pytest

from rmd_dev.grafana import (
    DASHBOARD,
    main,
    metric_names,
    queries,
    render,
    without_grafana_variables,
)


def test_the_checked_in_dashboard_is_the_generated_one() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == render()
    assert main(["--check"]) == 0


def test_every_panel_has_a_query_and_the_topics_are_there() -> None:
    model = json.loads(render())
    panels = [panel for panel in model["panels"] if panel["type"] == "timeseries"]
    titles = " | ".join(panel["title"] for panel in panels).lower()

    for topic in (
        "allocation latency",
        "taskmanagers by state",
        "total, available, demanded",
        "pending taskmanagers by reason",
        "api errors",
        "throttling",
        "api request latency",
        "watch restarts and relists",
    ):
        assert topic in titles
    assert all(
        panel["targets"] and panel["datasource"]["uid"] == "${datasource}" for panel in panels
    )
    assert len({panel["id"] for panel in model["panels"]}) == len(model["panels"])


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ('sum(rmd_a{namespace=~"$namespace"})', {"rmd_a"}),
        (
            "histogram_quantile(0.99, sum by (le, verb) "
            '(rate(rmd_b_bucket{x="}"}[$__rate_interval])))',
            {"rmd_b_bucket"},
        ),
        ("sum(rmd_c) - sum(rmd_d) + 2e3 * rmd_e offset 5m", {"rmd_c", "rmd_d", "rmd_e"}),
        ("rmd_f > bool 1 and on (pod) group_left (x) rmd_g", {"rmd_f", "rmd_g"}),
        ("sum without (reason) (increase(rmd_h_total[1m]))", {"rmd_h_total"}),
    ],
)
def test_metric_names_are_read_from_promql(expression: str, names: set[str]) -> None:
    assert metric_names(expression) == names


def test_every_query_names_rmd_metrics_and_grafana_variables_can_be_filled_in() -> None:
    for expression in queries():
        assert metric_names(expression)
        assert all(name.startswith("rmd_") for name in metric_names(expression)), expression
        assert "$" not in without_grafana_variables(expression)
