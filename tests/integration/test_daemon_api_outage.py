"""The Kubernetes API server unreachable for pod creates: the real daemon on the real control
plane, behind a fault-injecting proxy that closes every pod create without an answer.

Not the pods' fault: no start failure, no start pause, the job's reason names the API
server, and once it answers again the same pods are created within the create backoff
(≤ 10 s) — before, the failures tripped the start-failure limit and creates resumed only
when they had left its minute."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from tests.conftest import DevClusterInfo
from tests.integration.daemon_harness import pod_census, running_daemon
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

OUTAGE = 20.0  # seconds without an answer to any pod create


async def test_creates_resume_soon_after_an_api_outage_with_no_start_failure(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    proxy: FaultProxy,
    proxied_kubeconfig: Path,
) -> None:
    kubeconfig = proxied_kubeconfig
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        kubeconfig=kubeconfig,
        # Flink's defaults would trip within the outage: 10 failures a minute, 3 s pause.
        extra={"resourcemanager.start-worker.max-failure-rate": "10"},
    ) as daemon:
        async with pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as c:
            c.limit = lambda: 2
            loop = asyncio.get_running_loop()
            proxy.inject(method="POST", path_regex=r"/pods$", status=0, times=None)
            outage_started = loop.time()
            await daemon.put_requirement("job-o", 8)

            async def reason_names_the_api_server() -> bool:
                view = await daemon.get_json("/v1/jobs/job-o")
                return "API server cannot be reached" in (view["unfulfilled_reason"] or "")

            await eventually(reason_names_the_api_server, timeout=15, what="the outage reason")
            view = await daemon.get_json("/v1/jobs/job-o")
            assert "failing pods" not in view["unfulfilled_reason"]
            # The outage lasts OUTAGE seconds: an interval being staged, not a wait for state.
            await asyncio.sleep(max(0.0, outage_started + OUTAGE - loop.time()))
            refused = len(proxy.requests_matching(method="POST", path_regex=r"/pods$"))
            proxy.clear_faults()
            recovered_at = loop.time()
            await daemon.wait_fulfilled("job-o", timeout=45)
            converged = loop.time() - recovered_at

            metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
            assert "rmd_start_failures_total 0.0" in metrics
            assert "rmd_start_throttle_trips_total 0.0" in metrics
            cid = daemon.cluster_id
            assert c.seen == {f"{cid}-taskmanager-1-1", f"{cid}-taskmanager-1-2"}  # no extra pod
            assert c.violations == []
            # The backoff tops out at 10 s; the pods then start and register in a few seconds.
            assert converged <= 25.0, f"fulfilled {converged:.1f} s after the API came back"
            # Creates were retried with backoff, not hammered: each pod's create goes out at
            # most ~9 times in 20 s, each time with the gateway's own few retries.
            assert 2 <= refused <= 2 * 9 * 6, refused
            print(  # the figure to quote
                f"\napi outage {OUTAGE:g} s: {refused} pod create requests refused; "
                f"fulfilled {converged:.1f} s after the API server answered again"
            )
