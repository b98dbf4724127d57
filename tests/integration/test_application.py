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

from rmd_dev.provision import FlinkInstall
from tests.conftest import DevClusterInfo
from tests.integration.cluster_cli import (
    NOTHING,
    apply_rbac,
    cluster_objects,
    local_conf_dir,
    pod_logs,
    rmd_cli,
    started_jobmanager,
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


async def test_an_application_runs_to_its_end_and_the_cluster_removes_itself(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(kube_api)
    await apply_rbac(dev_cluster, core, namespace)
    conf_dir = local_conf_dir(flink_install, namespace=namespace, work_dir=tmp_path)
    cluster_id = "app-a"
    begin = time.monotonic()
    started = await rmd_cli(
        *["application", "start", "--kubeconfig", str(dev_cluster.kubeconfig)],
        *["--conf-dir", str(conf_dir), "-D", f"kubernetes.cluster-id={cluster_id}"],
        *["-D", "parallelism.default=4", "--jar", str(rate_job_jar)],
        *["--", str(RECORDS_PER_SECOND), str(RECORDS)],
    )
    start_seconds = time.monotonic() - begin
    assert started.returncode == 0, (
        started.stdout + started.stderr + pod_logs(dev_cluster, namespace)
    )
    assert f"application cluster {cluster_id} is up" in started.stdout
    assert "the cluster removes itself when it has ended" in started.stdout
    objects = await cluster_objects(kube_api, namespace)
    assert objects["Deployment"] == [cluster_id]
    assert sorted(objects["Service"]) == [cluster_id, f"{cluster_id}-rest"]
    assert objects["ConfigMap"] == [f"flink-config-{cluster_id}"]

    seen_states: set[str] = set()
    taskmanagers: set[str] = set()
    registered: set[str] = set()
    firsts: dict[str, float] = {}  # when each milestone was first seen, from the start

    def first(milestone: str, reached: bool) -> None:
        if reached and milestone not in firsts:
            firsts[milestone] = time.monotonic() - begin

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        jm = started_jobmanager(
            flink_install,
            start_output=started.stdout,
            cluster_id=cluster_id,
            namespace=namespace,
            conf_dir=conf_dir,
            work_dir=tmp_path,
            http=http,
        )

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

        try:
            await eventually(
                everything_gone,
                what="the application to end and its cluster to remove itself",
                timeout=JVM_DEADLINE,
                interval=0.5,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{pod_logs(dev_cluster, namespace)}") from None
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
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(kube_api)
    await apply_rbac(dev_cluster, core, namespace)
    conf_dir = local_conf_dir(flink_install, namespace=namespace, work_dir=tmp_path)
    common = ["--kubeconfig", str(dev_cluster.kubeconfig), "--conf-dir", str(conf_dir)]
    cluster_id = "app-stays"
    started = await rmd_cli(
        *["application", "start", *common, "-D", f"kubernetes.cluster-id={cluster_id}"],
        *["-D", "execution.shutdown-on-application-finish=false"],
        *["-D", "parallelism.default=2", "--jar", str(rate_job_jar)],
        *["--class", "rmd.testjob.RateJob", "--", str(RECORDS_PER_SECOND), "300"],
    )
    assert started.returncode == 0, (
        started.stdout + started.stderr + pod_logs(dev_cluster, namespace)
    )
    assert "the cluster stays after it" in started.stdout

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        jm = started_jobmanager(
            flink_install,
            start_output=started.stdout,
            cluster_id=cluster_id,
            namespace=namespace,
            conf_dir=conf_dir,
            work_dir=tmp_path,
            http=http,
        )

        async def finished() -> bool:
            return await _job_states(jm) == ["FINISHED"]

        try:
            await eventually(finished, what="the job FINISHED", timeout=JVM_DEADLINE, interval=1)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{pod_logs(dev_cluster, namespace)}") from None

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

    stopped = await rmd_cli("session", "stop", *common, "-D", f"kubernetes.cluster-id={cluster_id}")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert await cluster_objects(kube_api, namespace) == NOTHING
