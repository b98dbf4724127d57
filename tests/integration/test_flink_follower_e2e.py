"""The real daemon following a Flink REST API (the fake serving recorded Flink 2.3.0 shapes) on
the real control plane: Flink's job becomes pods, and Flink's view gates their release."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from tests.conftest import DevClusterInfo
from tests.integration.daemon_harness import RunningDaemon, pod_census, running_daemon
from tests.support.fake_flink import FakeFlink
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

JOB = "0123456789abcdef0123456789abcdef"
IDLE_TIMEOUT = 3.0


@pytest.fixture
async def flink() -> AsyncIterator[FakeFlink]:
    async with FakeFlink() as fake:
        yield fake


async def readyz_flink(daemon: RunningDaemon) -> dict[str, object]:
    body = await daemon.get_json("/readyz")
    flink: dict[str, object] = body["flink"]
    return flink


async def test_a_flink_job_gets_pods_and_flink_decides_when_they_go(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, flink: FakeFlink
) -> None:
    extra = {
        "rmd.flink.rest-url": flink.url,
        "rmd.flink.poll-interval": "200 ms",
        "rmd.flink.usage-poll-interval": "200 ms",
        "resourcemanager.taskmanager-timeout": f"{IDLE_TIMEOUT:.0f} s",
    }
    job = flink.add_job(JOB, parallelism=3, groups=2)  # 3 + 3 slots: two 4-slot pods
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, extra=extra
    ) as daemon:
        async with pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as c:
            c.limit = lambda: 2

            async def declared() -> bool:  # by the follower itself, under Flink's job id
                async with daemon.http.get(f"{daemon.url}/v1/jobs/{JOB}") as resp:
                    return resp.status == 200

            await eventually(declared, timeout=10, what="the Flink job declared")
            view = await daemon.wait_fulfilled(JOB)
            assert view["slots_required"] == 6
            names = sorted(await daemon.live_pod_names())
            assert len(names) == 2
            for name in names:  # the TaskManagers join Flink too; Flink runs the job there
                flink.add_taskmanager(name, slots=4, jobs=[JOB] * 3)
            assert (await readyz_flink(daemon))["state"] == "following"

            # The job ends while Flink's REST API is down: rmd cannot know, keeps everything.
            await flink.down()
            job.state = "CANCELED"
            for taskmanager in flink.taskmanagers.values():
                taskmanager.jobs = []

            async def failing() -> bool:
                return (await readyz_flink(daemon))["state"] == "failing"

            await eventually(failing, timeout=10, what="readyz reports Flink unreachable")
            assert (await daemon.get_json(f"/v1/jobs/{JOB}"))["slots_required"] == 6

            async def outage_outlasted_the_idle_timeout() -> bool:
                failing_for = (await readyz_flink(daemon))["failing_for_seconds"]
                return isinstance(failing_for, float) and failing_for > IDLE_TIMEOUT + 1

            await eventually(
                outage_outlasted_the_idle_timeout,
                timeout=IDLE_TIMEOUT + 10,
                what="the outage lasting longer than the idle timeout",
            )
            assert await daemon.live_pod_names() == set(names)  # nothing went meanwhile
            assert c.left_at == {}
            metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
            assert "rmd_flink_rest_reachable 0.0" in metrics

            # Flink is back: the job is removed and both TaskManagers go after the timeout.
            loop = asyncio.get_running_loop()
            await flink.up()

            async def job_removed() -> bool:
                async with daemon.http.get(f"{daemon.url}/v1/jobs/{JOB}") as resp:
                    return resp.status == 404

            # within the follower's retry backoff (it grows while Flink is down)
            await eventually(job_removed, timeout=10, what="the cancelled job removed")
            removed_at = loop.time()

            async def all_released() -> bool:
                return not await daemon.live_pod_names()

            await eventually(all_released, timeout=IDLE_TIMEOUT + 10, what="pods released")
            # the idle timeout counts from the job's removal, not from Flink's return
            released_after = max(c.left_at[name] for name in names) - removed_at
            assert IDLE_TIMEOUT - 0.5 <= released_after <= IDLE_TIMEOUT + 2.0, released_after
            assert c.violations == []
