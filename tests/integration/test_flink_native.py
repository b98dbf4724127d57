"""Flink's OWN native Kubernetes mode (no rmd) on the local control plane: the reference the
side-by-side benchmark measures rmd against (``bench/flink_side_by_side.py``).

:func:`rmd_dev.flink.native.native_session` runs Flink's ``KubernetesSessionClusterEntrypoint``
as a local process; its resource manager creates TaskManager pods through the API server, the
node emulator runs them as real TaskManager JVMs, and a job runs on them.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from rmd_dev.flink.jobmanager import FlinkRest, task_states, task_total
from rmd_dev.flink.native import native_session
from rmd_dev.provision import FlinkInstall
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo
from tests.integration.daemon_harness import pod_census
from tests.support.flink import live_taskmanager_pods, report_figures
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

JVM_DEADLINE = 180.0  # JobManager and TaskManager JVMs start in 10-17 s on an idle machine
IDLE_TIMEOUT = 5.0


@pytest.mark.timeout(420)
async def test_flink_native_mode_creates_a_taskmanager_pod_and_runs_a_job(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
) -> None:
    """A parallelism-2 job (2 slots per TaskManager): Flink's resource manager creates one
    TaskManager pod, owned by the JobManager Deployment and bound to its own pod IP; Flink
    lists it under the pod's name, every task runs; after a cancel it is released."""
    core = client.CoreV1Api(kube_api)
    cluster_id = "flink-native"
    figures: dict[str, float] = {}
    async with (
        native_session(
            flink=flink_install,
            api=kube_api,
            kubeconfig=dev_cluster.kubeconfig,
            namespace=namespace,
            cluster_id=cluster_id,
            work_dir=tmp_path / "native",
            extra={"resourcemanager.taskmanager-timeout": f"{IDLE_TIMEOUT:.0f} s"},
        ) as cluster,
        pod_census(kube_api, namespace=namespace, cluster_id=cluster_id) as census,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        rest = FlinkRest(http, cluster.rest_url)

        await cluster.wait_answering(rest, timeout=JVM_DEADLINE)
        assert census.seen == set(), "no TaskManager pod before a job"
        jar_id = await rest.upload_jar(rate_job_jar)
        submitted = time.monotonic()
        job_id = await rest.submit(jar_id, parallelism=2)

        async def all_running() -> bool:
            job = await rest.job(job_id)
            return task_states(job).get("RUNNING", 0) == task_total(job) > 0

        await eventually(all_running, what="every task RUNNING", timeout=JVM_DEADLINE, interval=0.5)
        figures["submit → all tasks RUNNING"] = time.monotonic() - submitted

        [pod] = await live_taskmanager_pods(core, namespace=namespace, cluster_id=cluster_id)
        assert census.seen == {pod.metadata.name}
        assert [ref.kind for ref in pod.metadata.owner_references] == ["Deployment"]
        assert pod.metadata.owner_references[0].name == cluster_id
        assert await rest.taskmanager_ids() == [pod.metadata.name]
        detail = await rest.get(f"/taskmanagers/{pod.metadata.name}")
        assert detail["slotsNumber"] == 2
        assert pod.status.pod_ip in str(detail["path"]), (pod.status.pod_ip, detail["path"])
        config_map = await core.read_namespaced_config_map(
            f"flink-config-{cluster_id}", namespace, _request_timeout=REQUEST_TIMEOUT
        )
        assert "config.yaml" in config_map.data

        cancelled = time.monotonic()
        await rest.cancel(job_id)

        async def released() -> bool:
            return pod.metadata.name in census.left_at

        await eventually(
            released, what="the idle TaskManager pod released", timeout=IDLE_TIMEOUT + 60
        )
        figures["cancel → pod released"] = time.monotonic() - cancelled
        assert census.seen == {pod.metadata.name}
        assert census.max_alive == 1
    report_figures("Flink native figures", figures)
