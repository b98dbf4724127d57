"""``rmd daemon`` as a process: graceful SIGTERM leaves the pods, a restart adopts them."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from rmd_dev.cluster import free_port
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo
from tests.integration.daemon_harness import (
    TM_SELECTOR,
    RunningDaemon,
    daemon_overrides,
    daemon_process,
    pod_census,
)
from tests.support.waiting import eventually, within

pytestmark = pytest.mark.integration


async def test_sigterm_leaves_pods_and_a_restart_adopts_them(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    cluster_id = "flink-restart"
    port = free_port()
    conf_dir = Path(tempfile.mkdtemp(prefix="rmd-conf-", dir=tmp_path))
    argv = ["--conf-dir", str(conf_dir), "--kubeconfig", str(dev_cluster.kubeconfig)]
    for item in daemon_overrides(cluster_id=cluster_id, namespace=namespace, port=port):
        argv += ["-D", item]
    log = tmp_path / "daemon.log"
    core = client.CoreV1Api(kube_api)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
        pod_census(kube_api, namespace=namespace, cluster_id=cluster_id) as census,
    ):
        daemon = RunningDaemon(
            url=f"http://127.0.0.1:{port}",
            cluster_id=cluster_id,
            namespace=namespace,
            http=http,
            core=core,
        )

        async def ready() -> bool:
            try:
                async with http.get(f"{daemon.url}/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        async with daemon_process(dev_cluster=dev_cluster, argv=argv, log=log) as first:
            await eventually(ready, timeout=30, what="first daemon ready")
            await daemon.put_requirement("job-a", 8)
            await daemon.wait_fulfilled("job-a")
            pods = await daemon.live_pod_names()
            assert pods == {f"{cluster_id}-taskmanager-1-1", f"{cluster_id}-taskmanager-1-2"}

            first.send_signal(signal.SIGTERM)
            code = await within(first.wait(), seconds=30, what="the first daemon to exit")
            assert code == 0, log.read_text()[-2000:]

        # The pods are left running for the next start to adopt.
        assert await daemon.live_pod_names() == pods

        async with daemon_process(dev_cluster=dev_cluster, argv=argv, log=log) as second:
            await eventually(ready, timeout=30, what="second daemon ready")

            async def adopted_and_registered() -> bool:
                tms = await daemon.taskmanagers()
                return {t["taskmanager_id"] for t in tms if t["state"] == "registered"} == pods

            # The agents re-register with the new daemon (heartbeat 404 → register).
            await eventually(adopted_and_registered, timeout=60, what="agents re-registered")
            # The JobMaster re-declares its full requirement: served by the adopted pods.
            await daemon.put_requirement("job-a", 8)
            view = await daemon.wait_fulfilled("job-a")
            assert {s["taskmanager_id"] for s in view["slots"]} == pods
            assert census.seen == pods  # nothing new was created, nothing leaked

            # New pods carry the next attempt number.
            await daemon.put_requirement("job-a", 12)
            await daemon.wait_fulfilled("job-a")
            assert await daemon.live_pod_names() == pods | {f"{cluster_id}-taskmanager-2-1"}

            second.send_signal(signal.SIGTERM)
            assert await within(second.wait(), seconds=30, what="the second daemon to exit") == 0

    await core.delete_collection_namespaced_pod(
        namespace,
        label_selector=f"{TM_SELECTOR},app={cluster_id}",
        _request_timeout=REQUEST_TIMEOUT,
    )
