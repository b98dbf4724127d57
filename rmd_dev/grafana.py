"""The Grafana dashboard ``conf/grafana/rmd.json``, generated from the panels below.

``make grafana`` (``python -m rmd_dev.grafana``) writes it; ``--check`` only says whether the
file is current (a unit test does too). Every query selects the daemon by the ``namespace``
and ``pod`` labels that the scrape job of ``conf/prometheus/scrape-rmd.yaml`` adds;
:func:`metric_names` reads the metric names a PromQL expression uses, so a test can compare
them with what the daemon's ``/metrics`` really exports.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "conf" / "grafana" / "rmd.json"
SELECTOR = '{namespace=~"$namespace", pod=~"$pod"}'
RATE = "[$__rate_interval]"
# Grafana's own variables, and what they stand for when a query is checked outside Grafana.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*", "$pod": ".*"}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    stacked: bool = False


def _quantiles(histogram: str, *, by: str = "") -> tuple[Query, ...]:
    grouping = f"le, {by}" if by else "le"
    legend_by = f"{{{{{by}}}}} " if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({grouping}) "
            f"(rate({histogram}_bucket{SELECTOR}{RATE})))",
            f"{legend_by}p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def panels() -> tuple[tuple[str, tuple[Panel, ...]], ...]:
    """The dashboard's rows and their panels."""
    s = SELECTOR
    return (
        (
            "Slots and jobs",
            (
                Panel(
                    "Task slots: total, available, demanded",
                    (
                        Query(f"sum(rmd_task_slots{s})", "total (registered TaskManagers)"),
                        Query(f"sum(rmd_task_slots_available{s})", "available"),
                        Query(
                            f"sum(rmd_task_slots{s}) - sum(rmd_task_slots_available{s}) "
                            f"+ sum(rmd_pending_slot_demand{s})",
                            "demanded (allocated + waiting)",
                        ),
                        Query(f"sum(rmd_pending_slot_demand{s})", "waiting for a slot"),
                    ),
                    description="Flink's taskSlotsTotal / taskSlotsAvailable, and the jobs' "
                    "demand: what is allocated plus what still waits.",
                ),
                Panel(
                    "Slot allocation latency (demand → slot)",
                    _quantiles("rmd_slot_allocation_seconds"),
                    unit="s",
                ),
                Panel(
                    "Jobs waiting and the longest wait",
                    (
                        Query(f"sum(rmd_jobs{s})", "jobs"),
                        Query(f"sum(rmd_jobs_waiting{s})", "jobs waiting"),
                        Query(f"max(rmd_job_oldest_wait_seconds{s})", "longest wait (s)"),
                    ),
                ),
            ),
        ),
        (
            "TaskManager pods",
            (
                Panel(
                    "TaskManagers by state",
                    (Query(f"sum by (state) (rmd_taskmanagers{s})", "{{state}}"),),
                    stacked=True,
                ),
                Panel(
                    "Pending TaskManagers by reason",
                    (Query(f"sum by (reason) (rmd_pending_taskmanagers{s})", "{{reason}}"),),
                    stacked=True,
                    description="Why requested and pending TaskManagers have not registered.",
                ),
                Panel(
                    "TaskManager start-up (pod create → registered)",
                    _quantiles("rmd_taskmanager_startup_seconds"),
                    unit="s",
                ),
                Panel(
                    "Pods created and deleted",
                    (
                        Query(f"sum(rate(rmd_pods_created_total{s}{RATE}))", "created"),
                        Query(
                            f"sum by (reason) (rate(rmd_pod_create_failures_total{s}{RATE}))",
                            "create failed: {{reason}}",
                        ),
                        Query(
                            f"sum by (reason) (rate(rmd_pods_deleted_total{s}{RATE}))",
                            "deleted: {{reason}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "TaskManagers lost and pod problems",
                    (
                        Query(
                            f"sum by (reason) (increase(rmd_taskmanagers_lost_total{s}{RATE}))",
                            "lost: {{reason}}",
                        ),
                        Query(
                            f"sum by (reason) (increase(rmd_pod_problems_total{s}{RATE}))",
                            "problem: {{reason}}",
                        ),
                    ),
                ),
                Panel(
                    "Start failures and throttling",
                    (
                        Query(f"sum(increase(rmd_start_failures_total{s}{RATE}))", "failures"),
                        Query(
                            f"sum(increase(rmd_start_throttle_trips_total{s}{RATE}))",
                            "limit tripped",
                        ),
                        Query(f"max(rmd_starts_throttled{s})", "throttled now (1/0)"),
                    ),
                    description="resourcemanager.start-worker.max-failure-rate: while "
                    "throttled, no new TaskManager pod is created.",
                ),
            ),
        ),
        (
            "Kubernetes API",
            (
                Panel(
                    "API errors by status (0 = no answer)",
                    (
                        Query(
                            f"sum by (code) (rate(rmd_kubernetes_api_errors_total{s}{RATE}))",
                            "{{code}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "API request latency by verb (p99)",
                    (
                        Query(
                            "histogram_quantile(0.99, sum by (le, verb) (rate("
                            f"rmd_kubernetes_api_request_duration_seconds_bucket{s}{RATE})))",
                            "{{verb}}",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "API requests by verb and result",
                    (
                        Query(
                            "sum by (verb, result) (rate("
                            f"rmd_kubernetes_api_request_duration_seconds_count{s}{RATE}))",
                            "{{verb}} {{result}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Pod watch restarts and relists",
                    (
                        Query(
                            f"sum by (reason) (increase(rmd_watch_restarts_total{s}{RATE}))",
                            "restart: {{reason}}",
                        ),
                        Query(f"sum(increase(rmd_watch_relists_total{s}{RATE}))", "relists"),
                    ),
                ),
                Panel(
                    "Kept state size (rmd-state ConfigMap)",
                    (Query(f"max(rmd_state_bytes{s})", "bytes"),),
                    unit="bytes",
                    description="A ConfigMap holds at most 1 MiB; from 900 KiB rmd logs "
                    "state_near_size_limit, above 1 MiB the state is no longer written.",
                ),
            ),
        ),
    )


def queries() -> Iterator[str]:
    """Every PromQL expression of the dashboard."""
    for _row, row_panels in panels():
        for panel in row_panels:
            for query in panel.queries:
                yield query.expr


def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    grafana_panels: list[dict[str, Any]] = []
    panel_id = 0
    y = 0
    for row_title, row_panels in panels():
        panel_id += 1
        grafana_panels.append(
            {
                "type": "row",
                "id": panel_id,
                "title": row_title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        y += 1
        for index, panel in enumerate(row_panels):
            panel_id += 1
            grafana_panels.append(
                _timeseries(panel, panel_id=panel_id, datasource=datasource, index=index, y=y)
            )
        y += 8 * ((len(row_panels) + 2) // 3)
    return {
        "title": "rmd — Flink resource manager",
        "uid": "rmd-resource-manager",
        "description": "rmd's allocation, TaskManager pods and Kubernetes API use. "
        "Generated by rmd_dev/grafana.py (make grafana).",
        "tags": ["flink", "kubernetes", "rmd"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "timezone": "",
        "annotations": {"list": []},
        "templating": {"list": _variables()},
        "panels": grafana_panels,
    }


def _timeseries(
    panel: Panel, *, panel_id: int, datasource: dict[str, str], index: int, y: int
) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10}
    if panel.stacked:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "type": "timeseries",
        "id": panel_id,
        "title": panel.title,
        "description": panel.description,
        "datasource": datasource,
        "gridPos": {"x": 8 * (index % 3), "y": y + 8 * (index // 3), "w": 8, "h": 8},
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + number),
                "datasource": datasource,
                "expr": query.expr,
                "legendFormat": query.legend,
            }
            for number, query in enumerate(panel.queries)
        ],
    }


def _variables() -> list[dict[str, Any]]:
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
        },
        *(
            {
                "name": name,
                "label": name,
                "type": "query",
                "datasource": datasource,
                "query": {"query": query, "refId": name},
                "definition": query,
                "refresh": 2,
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
            }
            for name, query in (
                ("namespace", "label_values(rmd_task_slots, namespace)"),
                ("pod", 'label_values(rmd_task_slots{namespace=~"$namespace"}, pod)'),
            )
        ),
    ]


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


# ---------------------------------------------------------------------------- PromQL names

_FUNCTION_OR_KEYWORD = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\s*\(")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "inf", "nan"}
)


def metric_names(expression: str) -> set[str]:
    """The metric names an expression selects: every identifier that is not a function or
    aggregation (followed by ``(``), a keyword, a label name in ``by (...)``/``{...}``, a
    range, a string or a number."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expression)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    text = _FUNCTION_OR_KEYWORD.sub(" ", text)  # calls: sum(, rate(, histogram_quantile(
    return {
        name
        for name in _IDENTIFIER.findall(re.sub(r"(?<![\w:])\d[\w.]*", " ", text))
        if name.lower() not in _KEYWORDS
    }


def without_grafana_variables(expression: str) -> str:
    """The expression as Prometheus can evaluate it, Grafana's variables filled in."""
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return expression


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rmd_dev.grafana", description=f"Write {DASHBOARD} from rmd_dev/grafana.py."
    )
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    text = render()
    current = DASHBOARD.read_text(encoding="utf-8") if DASHBOARD.exists() else ""
    if args.check:
        if current != text:
            print(f"{DASHBOARD} is out of date: run `make grafana`", file=sys.stderr)
            return 1
        return 0
    DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD.write_text(text, encoding="utf-8")
    print(f"wrote {DASHBOARD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
