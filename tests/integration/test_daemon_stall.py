"""The daemon's own process stopped (SIGSTOP) for longer than the heartbeat timeout and
resumed (SIGCONT): the real ``rmd daemon`` process, registered agents heartbeating, an
independent pod watcher. The heartbeats wait unread in the daemon's sockets while it stands
still; it must notice its own stall and give the TaskManagers a fresh chance instead of
declaring them lost (issue #12: before, all 4 TaskManagers were lost and their pods
deleted)."""

from __future__ import annotations

import asyncio
import signal

import pytest
from kubernetes_asyncio import client

from tests.conftest import DevClusterInfo
from tests.integration.daemon_harness import pod_census, running_daemon
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

HEARTBEAT_TIMEOUT = 10.0  # the harness' heartbeat.timeout
STALL = 15.0  # longer than the heartbeat timeout


async def test_a_stopped_and_resumed_daemon_loses_no_taskmanager(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, as_process=True
    ) as daemon:
        async with pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as c:
            c.limit = lambda: 2
            await daemon.put_requirement("job-s", 8)  # 4 slots per TaskManager: 2 pods
            await daemon.wait_fulfilled("job-s", timeout=90)
            pods = await daemon.live_pod_names()
            assert len(pods) == 2

            loop = asyncio.get_running_loop()
            daemon.signal(signal.SIGSTOP)
            # The stall lasts STALL seconds: an interval being staged, not a wait for state.
            await asyncio.sleep(STALL)
            daemon.signal(signal.SIGCONT)
            resumed = loop.time()

            async def stall_noticed() -> bool:
                return await daemon.metric("rmd_daemon_stalls_total") >= 1

            await eventually(stall_noticed, timeout=10, what="the daemon to notice its stall")
            # Watch for a whole heartbeat timeout after the resume (and a margin): a daemon
            # that judged the TaskManagers on their stale heartbeats would lose them here.
            while loop.time() < resumed + HEARTBEAT_TIMEOUT + 3:
                view = await daemon.get_json("/v1/jobs/job-s")
                assert view["slots_allocated"] == 8, view
                states = {tm["taskmanager_id"]: tm["state"] for tm in await daemon.taskmanagers()}
                assert states == dict.fromkeys(pods, "registered"), states
                await asyncio.sleep(0.5)

            assert await daemon.metric("rmd_taskmanagers_lost_total") == 0
            assert await daemon.metric("rmd_pods_deleted_total") == 0
            assert c.seen == pods  # no pod replaced
            assert not [event for event in c.events if event[1] == "DELETED"]
            assert c.violations == []
            assert daemon.process is not None
            assert daemon.process.returncode is None
            stalled = await daemon.metric("rmd_daemon_stalled_seconds_total")
            print(f"\ndaemon stopped {STALL:g} s: noticed a stall of {stalled:.1f} s, 0 lost")
