"""rmd following a real Flink JobManager (``rmd.flink.rest-url``): a job submitted to Flink is
rmd's demand without anyone calling rmd's API, its tasks run on the TaskManager pods rmd
starts, and once it is cancelled the pods go after the idle timeout — counted from when both
rmd and Flink saw them idle.

The JobManager pod is played by local processes (:func:`tests.support.flink.flink_jobmanager`);
``tests/integration/test_flink_follower_e2e.py`` covers Flink outages against a fake REST API.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from rmd_dev.provision import FlinkInstall
from tests.conftest import DevClusterInfo
from tests.integration.daemon_harness import pod_census
from tests.support.flink import (
    flink_jobmanager,
    following_flink,
    following_keys,
    live_taskmanager_names,
    report_figures,
    rmd_jobs,
    wait_all_tasks_running,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

JVM_DEADLINE = 180.0  # TaskManager JVMs start in 10-17 s on an idle machine; CI is not idle
IDLE_TIMEOUT = 5.0
PARALLELISM = 4  # one slot-sharing group: 4 slots, exactly two TaskManagers of 2 slots
RELEASE_SLACK = 6.0  # polls (0.5 s), the pod watch, the emulator stopping the JVM


@pytest.mark.timeout(600)  # JVM starts under a loaded CI machine
async def test_a_real_flink_job_is_followed_from_submission_to_release(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(kube_api)
    cluster_id = "flink-follow"
    figures: dict[str, float] = {}
    async with (
        flink_jobmanager(
            flink=flink_install,
            kube_api=kube_api,
            kubeconfig=dev_cluster.kubeconfig,
            namespace=namespace,
            cluster_id=cluster_id,
            work_dir=tmp_path / "jobmanager",
            follow_flink=True,
            extra=following_keys(idle_timeout=IDLE_TIMEOUT),
        ) as jm,
        pod_census(kube_api, namespace=namespace, cluster_id=cluster_id) as census,
    ):
        census.limit = lambda: 2
        await eventually(lambda: following_flink(jm), what="/readyz: following Flink", timeout=30)
        assert await rmd_jobs(jm) == {}

        jar_id = await jm.upload_jar(rate_job_jar)
        submitted = time.monotonic()
        job_id = await jm.submit(jar_id, parallelism=PARALLELISM)

        # Nobody declares anything over rmd's API: the follower reads the job from Flink.
        async def declared() -> bool:
            return job_id in await rmd_jobs(jm)

        await eventually(declared, what=f"Flink job {job_id} declared to rmd", timeout=30)
        assert (await rmd_jobs(jm))[job_id]["slots_required"] == PARALLELISM
        await wait_all_tasks_running(
            jm,
            job_id,
            what=f"every task of the parallelism-{PARALLELISM} job RUNNING",
            timeout=JVM_DEADLINE,
        )
        figures["submit → all tasks RUNNING"] = time.monotonic() - submitted
        names = await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)
        assert len(names) == 2
        assert await jm.taskmanager_ids() == names
        assert (await rmd_jobs(jm))[job_id]["fulfilled"] is True

        # Cancelled in Flink: rmd removes the job and, once Flink has freed the slots too,
        # releases both TaskManagers after the idle timeout.
        loop = asyncio.get_running_loop()
        cancelled_at = loop.time()
        await jm.cancel(job_id)

        async def removed() -> bool:
            return job_id not in await rmd_jobs(jm)

        await eventually(removed, what=f"job {job_id} removed from rmd", timeout=30)

        async def released() -> bool:  # as the independent pod watch saw it
            return names <= census.left_at.keys()

        await eventually(released, what="both TaskManager pods released", timeout=60)
        assert not await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)
        release_after = {name: census.left_at[name] - cancelled_at for name in names}
        assert all(
            IDLE_TIMEOUT - 0.5 <= after <= IDLE_TIMEOUT + RELEASE_SLACK
            for after in release_after.values()
        ), release_after
        assert census.seen == names  # no pod but those two, ever
        figures["cancel → pods released"] = max(release_after.values())
        assert census.violations == []
    report_figures("real Flink follower figures", figures)
