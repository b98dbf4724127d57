"""``rmd application start`` end to end: the real CLI, the real controller-manager creating
the JobManager pod, the node emulator running the image entrypoint's ``application`` role
(the rmd daemon + Flink's standalone-job JobManager running the test job's jar, from the
cached FLINK_HOME) with the service account of ``conf/kubernetes/rbac.yaml``, real
TaskManagers, a bounded job that ends by itself — and the cluster removing itself.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from rmd.kube.statestore import state_config_map_name
from rmd_dev.provision import FlinkInstall
from tests.conftest import DevClusterInfo
from tests.integration.cluster_cli import (
    NOTHING,
    CliCluster,
    apply_rbac,
    cli_cluster,
    cluster_objects,
    pod_logs,
    rmd_cli,
)
from tests.support.flink import FlinkJobManager, live_taskmanager_names, report_figures
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

JVM_DEADLINE = 240.0
RECORDS_PER_SECOND = 100
RECORDS = 1000  # about 10 s of running
# Flink's REST API not answering (starting, or its pod gone) or answering an error.
FLINK_SILENT = (aiohttp.ClientError, AssertionError, TimeoutError, OSError)


async def _job_states(jm: FlinkJobManager) -> list[str]:
    """The states of Flink's jobs; [] while Flink does not answer (starting, or gone)."""
    try:
        overview = await jm.get("/jobs/overview")
    except FLINK_SILENT:
        return []
    return [str(job["state"]) for job in overview["jobs"]]


def _daemon_decision(dev_cluster: DevClusterInfo, namespace: str) -> str | None:
    """The daemon's application_finished log line, once it is there."""
    for line in pod_logs(dev_cluster, namespace, tail=None).splitlines():
        if "application_finished" in line:
            return line
    return None


@pytest.fixture
async def cli(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    tmp_path: Path,
) -> CliCluster:
    """``rmd application start`` on the local cluster, with the shipped RBAC applied."""
    await apply_rbac(dev_cluster, client.CoreV1Api(kube_api), namespace)
    return cli_cluster(dev_cluster, flink_install, namespace=namespace, work_dir=tmp_path)


async def test_an_application_runs_to_its_end_and_the_cluster_removes_itself(
    cli: CliCluster, kube_api: client.ApiClient, rate_job_jar: Path
) -> None:
    core = client.CoreV1Api(kube_api)
    dev_cluster, namespace, tmp_path = cli.dev_cluster, cli.namespace, cli.work_dir
    cluster_id = "app-a"
    begin = time.monotonic()
    started = await cli.start(
        "application",
        *["-D", f"kubernetes.cluster-id={cluster_id}"],
        *["-D", "parallelism.default=4", "--jar", str(rate_job_jar)],
        *["--", str(RECORDS_PER_SECOND), str(RECORDS)],
    )
    start_seconds = time.monotonic() - begin
    assert f"application cluster {cluster_id} is up" in started.stdout
    assert "the cluster removes itself when it has ended" in started.stdout
    objects = await cluster_objects(kube_api, namespace)
    assert objects["Deployment"] == [cluster_id]
    assert sorted(objects["Service"]) == [cluster_id, f"{cluster_id}-rest"]
    # the daemon's state ConfigMap comes with its first state write: there or not yet
    assert set(objects["ConfigMap"]) - {state_config_map_name(cluster_id)} == {
        f"flink-config-{cluster_id}"
    }

    seen_states: set[str] = set()
    taskmanagers: set[str] = set()
    registered: set[str] = set()
    firsts: dict[str, float] = {}  # when each milestone was first seen, from the start

    def first(milestone: str, reached: bool) -> None:
        if reached and milestone not in firsts:
            firsts[milestone] = time.monotonic() - begin

    async with cli.jobmanager(started, cluster_id=cluster_id, request_timeout=10) as jm:

        async def everything_gone() -> bool:
            """Meanwhile: which TaskManagers ran, registered with Flink, the job's states."""
            seen_states.update(await _job_states(jm))
            taskmanagers.update(
                await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)
            )
            with contextlib.suppress(*FLINK_SILENT):
                registered.update(await jm.taskmanager_ids())
            first("start to job RUNNING", "RUNNING" in seen_states)
            first("start to 2 TaskManagers registered", len(registered) == 2)
            objects = await cluster_objects(kube_api, namespace)
            first("start to Deployment gone", not objects["Deployment"])
            return objects == NOTHING

        await cli.eventually(
            everything_gone,
            what="the application to end and its cluster to remove itself",
            timeout=JVM_DEADLINE,
            interval=0.5,
        )
    gone_seconds = time.monotonic() - begin

    assert len(taskmanagers) == 2, taskmanagers  # parallelism 4 at 2 slots per TaskManager
    assert registered == taskmanagers  # each registered with Flink under its pod name
    assert "RUNNING" in seen_states
    decision = _daemon_decision(dev_cluster, namespace)
    assert decision is not None, pod_logs(dev_cluster, namespace)
    assert "FINISHED" in decision
    assert f"deployment {namespace}/{cluster_id} deleted" in decision
    flink_log = "".join(
        path.read_text(errors="replace") for path in (tmp_path / "jobmanager-logs").glob("*.log")
    )
    assert re.search(r"Job rmd-rate-job \(\w+\) switched from state RUNNING to FINISHED", flink_log)
    report_figures(
        "application",
        {
            "start (JobManager ready)": start_seconds,
            **firsts,
            "start to everything gone": gone_seconds,
        },
    )


async def test_told_to_stay_the_cluster_outlives_its_application_until_stopped(
    cli: CliCluster, kube_api: client.ApiClient, rate_job_jar: Path
) -> None:
    dev_cluster, namespace = cli.dev_cluster, cli.namespace
    cluster_id = "app-stays"
    started = await cli.start(
        "application",
        *["-D", f"kubernetes.cluster-id={cluster_id}"],
        *["-D", "execution.shutdown-on-application-finish=false"],
        *["-D", "parallelism.default=2", "--jar", str(rate_job_jar)],
        *["--class", "rmd.testjob.RateJob", "--", str(RECORDS_PER_SECOND), "300"],
    )
    assert "the cluster stays after it" in started.stdout

    async with cli.jobmanager(started, cluster_id=cluster_id, request_timeout=10) as jm:

        async def finished() -> bool:
            return await _job_states(jm) == ["FINISHED"]

        await cli.eventually(finished, what="the job FINISHED", timeout=JVM_DEADLINE, interval=1)

        async def decided() -> bool:
            return _daemon_decision(dev_cluster, namespace) is not None

        await eventually(decided, what="the daemon's decision", timeout=30, interval=0.5)
        decision = _daemon_decision(dev_cluster, namespace)
        assert decision is not None
        assert "stays" in decision
        # The decision is made and logged; the cluster is all there, Flink still answers.
        objects = await cluster_objects(kube_api, namespace)
        assert objects["Deployment"] == [cluster_id]
        assert sorted(objects["Service"]) == [cluster_id, f"{cluster_id}-rest"]
        assert await _job_states(jm) == ["FINISHED"]

    stopped = await rmd_cli(
        "session", "stop", *cli.common_args(), "-D", f"kubernetes.cluster-id={cluster_id}"
    )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert await cluster_objects(kube_api, namespace) == NOTHING
