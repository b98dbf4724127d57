"""The soak's code runs (seconds, not minutes): demand changes, a pod killed, samples taken,
the cluster converged at the end. Figures belong to ``make soak``."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from tests.conftest import DevClusterInfo
from tests.integration.soak import soak

pytestmark = pytest.mark.integration


async def test_a_short_soak_runs_and_samples(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    report = await soak(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        seconds=12,
        sample_every=4,
        kill_every=5,
    )
    print("\n" + report.summary())
    assert len(report.samples) >= 3
    assert all(s.rss_mb > 0 and s.open_fds > 0 and s.asyncio_tasks > 0 for s in report.samples)
    assert report.demand_changes >= 10
    assert report.pods_killed >= 1
    assert report.registrations >= 1
    assert set(report.slopes()) == {"rss_mb_per_min", "open_fds_per_min", "asyncio_tasks_per_min"}
