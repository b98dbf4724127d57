"""Every query of the Grafana dashboard names only metrics a real daemon's /metrics exports,
and a real Prometheus (Debian's) parses and evaluates each of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from rmd_dev.grafana import metric_names, queries, without_grafana_variables
from tests.conftest import DevClusterInfo
from tests.integration.daemon_harness import metrics_after_a_job
from tests.support.prometheus import running_prometheus

pytestmark = pytest.mark.integration

SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


def exported_names(exposition: str) -> set[str]:
    """The sample names an exposition has or declares (a labelled counter with no child yet
    has no sample, but its TYPE line names it)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
    return names


async def test_dashboard_queries_name_exported_metrics_and_parse(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    exported = exported_names(
        await metrics_after_a_job(dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace)
    )

    unknown = {
        expression: sorted(metric_names(expression) - exported)
        for expression in queries()
        if metric_names(expression) - exported
    }
    assert unknown == {}
    assert "rmd_kubernetes_api_request_duration_seconds_bucket" in exported  # the check sees

    async with running_prometheus(
        {"global": {"scrape_interval": "1s"}, "scrape_configs": []},
        workdir=tmp_path / "prometheus",
    ) as prometheus:
        errors = {
            expression: await prometheus.query_error(without_grafana_variables(expression))
            for expression in queries()
        }
        broken = await prometheus.query_error("sum(rmd_task_slots{pod=~})")

    assert {expression: error for expression, error in errors.items() if error} == {}
    assert broken is not None  # a bad expression is reported
