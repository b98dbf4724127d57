"""An API server that takes pod creates and does not answer them (its storage, etcd, hangs):
the real daemon behind a fault proxy that holds every pod create. The watch stays healthy,
so nothing else shows it: the job's reason, ``rmd_kubernetes_writes_unanswered`` and the
/readyz detail must (issue #12: before, /readyz said ready and jobs gave no reason)."""

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


async def test_creates_left_unanswered_are_named_and_recovery_follows(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    proxy: FaultProxy,
    proxied_kubeconfig: Path,
) -> None:
    kubeconfig = proxied_kubeconfig
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, kubeconfig=kubeconfig
    ) as daemon:
        async with pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as c:
            c.limit = lambda: 2
            loop = asyncio.get_running_loop()
            answer = asyncio.Event()
            proxy.inject(method="POST", path_regex=r"/pods$", status=None, gate=answer, times=None)
            declared = loop.time()
            await daemon.put_requirement("job-h", 8)

            async def hang_told() -> bool:
                view = await daemon.get_json("/v1/jobs/job-h")
                readyz = await daemon.get_json("/readyz")
                return (
                    "no answer from the Kubernetes API server" in (view["unfulfilled_reason"] or "")
                    and "kubernetes_writes" in readyz
                    and await daemon.metric("rmd_kubernetes_writes_unanswered") == 1
                )

            await eventually(hang_told, timeout=20, what="the hang in reason, readyz, metric")
            told_after = loop.time() - declared
            readyz = await daemon.get_json("/readyz")  # stays ready: 200
            assert readyz["kubernetes_writes"]["answered"] is False
            assert "etcd" in readyz["kubernetes_writes"]["detail"]

            answer.set()  # the API server answers again
            proxy.clear_faults()
            answered_at = loop.time()
            await daemon.wait_fulfilled("job-h", timeout=45)
            converged = loop.time() - answered_at

            async def all_clear() -> bool:
                readyz = await daemon.get_json("/readyz")
                return (
                    "kubernetes_writes" not in readyz
                    and await daemon.metric("rmd_kubernetes_writes_unanswered") == 0
                )

            await eventually(all_clear, timeout=10, what="the hang to be over everywhere")
            cid = daemon.cluster_id
            assert c.seen == {f"{cid}-taskmanager-1-1", f"{cid}-taskmanager-1-2"}
            assert c.violations == []
            assert await daemon.metric("rmd_start_failures_total") == 0
            print(
                f"\ncreates unanswered: told after {told_after:.1f} s; fulfilled "
                f"{converged:.1f} s after the API server answered"
            )
