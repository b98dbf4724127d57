"""``rmd daemon`` as a process: graceful SIGTERM leaves the pods, a restart adopts them and
gives every job its slots back."""

from __future__ import annotations

import signal
import socket
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
    daemon_argv,
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
    argv = daemon_argv(
        dev_cluster=dev_cluster,
        conf_dir=conf_dir,
        cluster_id=cluster_id,
        namespace=namespace,
        port=port,
    )
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

        async with daemon_process(argv=argv, log=log) as first:
            await eventually(ready, timeout=30, what="first daemon ready")
            await daemon.put_requirement("job-a", 8)
            view = await daemon.wait_fulfilled("job-a")
            slots_before = sorted(s["slot_id"] for s in view["slots"])
            pods = await daemon.live_pod_names()
            assert pods == {f"{cluster_id}-taskmanager-1-1", f"{cluster_id}-taskmanager-1-2"}

            first.send_signal(signal.SIGTERM)
            code = await within(first.wait(), seconds=30, what="the first daemon to exit")
            assert code == 0, log.read_text()[-2000:]

        # The pods are left running for the next start to adopt.
        assert await daemon.live_pod_names() == pods

        async with daemon_process(argv=argv, log=log) as second:
            await eventually(ready, timeout=30, what="second daemon ready")

            async def adopted_and_registered() -> bool:
                tms = await daemon.taskmanagers()
                return {t["taskmanager_id"] for t in tms if t["state"] == "registered"} == pods

            # The agents re-register with the new daemon (heartbeat 404 → register).
            await eventually(adopted_and_registered, timeout=60, what="agents re-registered")
            # The demand and every slot assignment came back without the JobMaster.
            view = await daemon.wait_fulfilled("job-a")
            assert sorted(s["slot_id"] for s in view["slots"]) == slots_before
            # The JobMaster declaring its full requirement again changes nothing.
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


async def test_a_port_in_use_stops_the_daemon_with_one_line_naming_the_key(
    dev_cluster: DevClusterInfo, namespace: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = daemon_argv(
            dev_cluster=dev_cluster,
            conf_dir=Path(tempfile.mkdtemp(prefix="rmd-conf-", dir=tmp_path)),
            cluster_id="flink-port-taken",
            namespace=namespace,
            port=port,
        )
        log = tmp_path / "daemon.log"
        async with daemon_process(argv=argv, log=log) as daemon:
            code = await within(daemon.wait(), seconds=60, what="the daemon to give up")
    output = log.read_text()
    assert code == 1, output[-2000:]
    (line,) = [line for line in output.splitlines() if line.startswith("rmd daemon:")]
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "rmd.rest.port" in line
