"""Real Flink in the loop: rmd's TaskManager pods run real Flink TaskManagers that join a real
Flink JobManager, and a real job runs on them.

The JobManager pod is played by local processes (Flink's standalone JobManager and ``rmd
daemon``, one configuration directory; :mod:`tests.support.flink`); the daemon runs with
exactly the shipped least-privilege role. Demand is declared through rmd's HTTP API; the
node emulator runs each pod's agent, which starts Flink's TaskManager through
``kubernetes.entry.path`` with the ``flink-config-<cluster-id>`` ConfigMap mounted at
``/opt/flink/conf``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, watch

from rmd.config.files import parse_config_yaml
from rmd.flink.launch_plan import PLAN_FILE, RUNNER_CLASS, LaunchPlan
from rmd.flink.taskmanager_memory import JVM_MEM_OPTS_ENV, KUBERNETES_TASKMANAGER_SCRIPT
from rmd_dev.provision import FlinkInstall
from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    apply_shipped_rbac,
    service_account_kubeconfig,
)
from tests.integration.daemon_harness import pod_census
from tests.support.flink import (
    all_tasks_running,
    assert_started_from_launch_plan,
    flink_jobmanager,
    following_flink,
    following_keys,
    live_taskmanager_names,
    live_taskmanager_pods,
    report_figures,
    wait_all_tasks_running,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

JVM_DEADLINE = 180.0  # TaskManager JVMs start in 10-17 s on an idle machine; CI is not idle


async def _least_privilege_kubeconfig(
    dev_cluster: DevClusterInfo, core: client.CoreV1Api, *, namespace: str, path: Path
) -> Path:
    await apply_shipped_rbac(dev_cluster, namespace=namespace)
    return await service_account_kubeconfig(
        core, dev_cluster, namespace=namespace, account="rmd", path=path
    )


def _taskmanager_jvms(pod_name: str) -> list[int]:
    """Pids of Java processes started with ``taskmanager.resource-id=<pod_name>``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                words = handle.read().split(b"\0")
        except OSError:
            continue
        if (
            words
            and words[0].endswith(b"java")
            and (f"taskmanager.resource-id={pod_name}".encode() in words)
        ):
            found.append(int(entry))
    return found


def _command_line(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().decode(errors="replace").split("\0")


async def _last_version(
    core: client.CoreV1Api, namespace: str, name: str, *, resource_version: str
) -> Any:
    """The pod as its DELETED event shows it (its last status), watching from
    ``resource_version`` on."""
    async with watch.Watch() as w:
        async for event in w.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=120,
            _request_timeout=(5, 150),
        ):
            if event["type"] == "DELETED":
                return event["object"]
    raise AssertionError(f"pod {name} not deleted within 120 s")


@pytest.mark.timeout(600)  # three rounds of JVM starts under a loaded CI machine
async def test_real_flink_taskmanagers_in_rmd_pods_run_a_job(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(kube_api)
    cluster_id = "flink-real"
    rmd_kubeconfig = await _least_privilege_kubeconfig(
        dev_cluster, core, namespace=namespace, path=tmp_path / "rmd.kubeconfig"
    )
    figures: dict[str, float] = {}
    async with flink_jobmanager(
        flink=flink_install,
        kube_api=kube_api,
        kubeconfig=dev_cluster.kubeconfig,
        daemon_kubeconfig=rmd_kubeconfig,
        namespace=namespace,
        cluster_id=cluster_id,
        work_dir=tmp_path / "jobmanager",
    ) as jm:
        # The daemon published Flink's configuration, owned by the JobManager Deployment.
        config_map = await core.read_namespaced_config_map(
            f"flink-config-{cluster_id}", namespace, _request_timeout=REQUEST_TIMEOUT
        )
        assert [ref.kind for ref in config_map.metadata.owner_references] == ["Deployment"]
        published = parse_config_yaml(config_map.data["config.yaml"])
        assert published["jobmanager.rpc.address"] == "127.0.0.1"
        assert published["rest.port"] == jm.rest_url.rsplit(":", 1)[1]
        assert "log4j-console.properties" in config_map.data
        # ... with the TaskManagers' launch plan, recorded once from Flink's own scripts.
        plan = LaunchPlan.from_json(config_map.data[PLAN_FILE])
        assert RUNNER_CLASS in plan.arguments, plan.arguments

        started = time.monotonic()
        await jm.daemon_json("PUT", "/v1/jobs/j/requirements", {"slots": 4})

        async def two_pods() -> bool:
            live = await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)
            return len(live) == 2

        await eventually(two_pods, what="2 TaskManager pods", timeout=30)
        pods = await live_taskmanager_pods(core, namespace=namespace, cluster_id=cluster_id)
        names = {pod.metadata.name for pod in pods}
        figures["pods created"] = time.monotonic() - started
        # Started as Flink's native mode starts them: kubernetes-taskmanager.sh with the JVM
        # memory options the daemon computed once with Flink's code (no helper JVM per pod).
        memory_options: set[str] = set()
        for pod in pods:
            [main] = [c for c in pod.spec.containers if c.name == "flink-main-container"]
            assert KUBERNETES_TASKMANAGER_SCRIPT in main.command, main.command
            memory_options.add({e.name: e.value for e in main.env}[JVM_MEM_OPTS_ENV])
        [memory_option_text] = memory_options
        assert "-Xmx" in memory_option_text, memory_option_text

        async def flink_lists_the_pods() -> bool:
            return await jm.taskmanager_ids() == names

        await eventually(
            flink_lists_the_pods,
            what=f"Flink's /taskmanagers == {sorted(names)}",
            timeout=JVM_DEADLINE,
            interval=0.5,
        )
        figures["Flink lists both TaskManagers"] = time.monotonic() - started

        async def rmd_registered() -> bool:
            body = await jm.daemon_json("GET", "/v1/taskmanagers")
            states = {tm["taskmanager_id"]: tm["state"] for tm in body["taskmanagers"]}
            return states == dict.fromkeys(names, "registered")

        await eventually(rmd_registered, what="both registered with rmd", timeout=30)
        figures["rmd shows both registered"] = time.monotonic() - started
        view = await jm.daemon_json("GET", "/v1/jobs/j")
        assert view["fulfilled"] is True

        # Each TaskManager has the pod's name as id, binds its pod IP, and has 2 slots.
        pod_ips = {
            pod.metadata.name: pod.status.pod_ip
            for pod in await live_taskmanager_pods(core, namespace=namespace, cluster_id=cluster_id)
        }
        for name in names:
            info = await jm.get(f"/taskmanagers/{name}")
            assert info["slotsNumber"] == 2
            assert f"@{pod_ips[name]}:6122/" in info["path"], info["path"]
        registered = await jm.daemon_json("GET", "/v1/taskmanagers")
        assert {tm["address"] for tm in registered["taskmanagers"]} == {
            f"{ip}:6122" for ip in pod_ips.values()
        }

        jar_id = await jm.upload_jar(rate_job_jar)
        submitted = time.monotonic()
        job_id = await jm.submit(jar_id, parallelism=4)
        await wait_all_tasks_running(
            jm, job_id, what="every task of the parallelism-4 job RUNNING", timeout=JVM_DEADLINE
        )
        figures["submit → all tasks RUNNING"] = time.monotonic() - submitted
        figures["demand → job RUNNING"] = time.monotonic() - started

        # Deleting a TaskManager pod through the API: its JVM stops, the pod goes away.
        victim = sorted(names)[0]
        [victim_jvm] = _taskmanager_jvms(victim)
        jvm_words = _command_line(victim_jvm)
        assert set(memory_option_text.split()) <= set(jvm_words), jvm_words
        # Each started its JVM from the daemon's launch plan, its log file named after the pod.
        assert_started_from_launch_plan(dev_cluster.dir, namespace=namespace, pods=names)
        [log_file] = [word for word in jvm_words if word.startswith("-Dlog.file=")]
        assert re.fullmatch(
            rf"-Dlog\.file=.*-kubernetes-taskmanager-\d+-{victim}\.log", log_file
        ), log_file
        deleted = time.monotonic()
        await core.delete_namespaced_pod(victim, namespace, _request_timeout=REQUEST_TIMEOUT)

        async def victim_gone() -> bool:
            listed = await core.list_namespaced_pod(
                namespace,
                field_selector=f"metadata.name={victim}",
                _request_timeout=REQUEST_TIMEOUT,
            )
            return not listed.items and victim not in await jm.taskmanager_ids()

        await eventually(victim_gone, what=f"{victim} gone from the API and from Flink", timeout=60)
        assert not _taskmanager_jvms(victim), "the deleted pod's TaskManager JVM still runs"
        figures["pod delete → JVM and pod gone"] = time.monotonic() - deleted

        # The TaskManager dying by itself ends the agent with its exit code (SIGKILL: 137)
        # and so the pod: it ends Failed with that exit code (the agent deregisters and rmd
        # deletes the pod at once; its last status still says how it ended).
        survivor = sorted(names)[1]
        [jvm] = _taskmanager_jvms(survivor)
        before = await core.read_namespaced_pod(
            survivor, namespace, _request_timeout=REQUEST_TIMEOUT
        )
        last_version = asyncio.create_task(  # from the version before the kill on
            _last_version(
                core, namespace, survivor, resource_version=before.metadata.resource_version
            )
        )
        os.kill(jvm, signal.SIGKILL)
        container_log = (
            dev_cluster.dir
            / "emulator"
            / "pods"
            / namespace
            / survivor
            / "flink-main-container.log"
        )

        async def agent_exited() -> bool:
            text = await asyncio.to_thread(container_log.read_text, errors="replace")
            return '"exit_code": 137, "event": "agent.command_exited"' in text

        await eventually(agent_exited, what=f"{survivor}'s agent exits with 137", timeout=60)
        async with asyncio.timeout(150):
            ended = await last_version
        assert ended.status.phase == "Failed", ended.status
        [container] = ended.status.container_statuses
        assert container.state.terminated is not None, container.state
        assert container.state.terminated.exit_code == 137, container.state
        # rmd replaces both; the job runs again on the replacements.
        recovered = time.monotonic()

        async def job_whole_again() -> bool:
            live = await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)
            if len(live) != 2 or live & names:
                return False
            return await jm.taskmanager_ids() == live and await all_tasks_running(jm, job_id)

        await eventually(
            job_whole_again,
            what="2 replacement TaskManagers, job RUNNING",
            timeout=JVM_DEADLINE,
            interval=0.5,
        )
        figures["TaskManagers lost → job RUNNING on replacements"] = time.monotonic() - recovered
        await jm.cancel(job_id)
    report_figures("real Flink figures", figures)


@pytest.mark.timeout(600)
async def test_after_a_jobmanager_pod_crash_the_same_taskmanager_pods_rejoin(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
) -> None:
    """Flink's JobManager and the daemon SIGKILLed and restarted (no HA), the job submitted
    again: no new pod (the old ones count as supply for the recovery timeout), and each
    agent, seeing the new JobManager answer that it does not know its TaskManager, restarts
    the TaskManager in its pod — Flink's own reconnect would wait for its heartbeat timeout,
    set to 10 minutes here so that only the agent's restart can bring the job back."""
    cluster_id = "flink-jmcrash"
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
            extra=following_keys(
                idle_timeout=10,
                **{
                    "resourcemanager.previous-worker.recovery.timeout": "60 s",
                    "heartbeat.timeout": "600 s",
                },
            ),
        ) as jm,
        pod_census(kube_api, namespace=namespace, cluster_id=cluster_id) as census,
    ):
        await eventually(lambda: following_flink(jm), what="following Flink", timeout=60)
        jar_id = await jm.upload_jar(rate_job_jar)
        job_id = await jm.submit(jar_id, parallelism=4)
        await wait_all_tasks_running(jm, job_id, what="the job RUNNING", timeout=JVM_DEADLINE)
        pods = set(census.alive)
        assert len(pods) == 2, pods

        crashed = time.monotonic()
        await jm.crash_and_restart()
        jar_id = await jm.upload_jar(rate_job_jar)  # a new JobManager: no jar, no job
        job_id = await jm.submit(jar_id, parallelism=4)
        await wait_all_tasks_running(
            jm, job_id, what="the resubmitted job RUNNING on the old pods", timeout=JVM_DEADLINE
        )
        figures["crash → RUNNING again"] = time.monotonic() - crashed
        assert census.seen == pods, "a pod was created after the crash"
        assert census.max_alive == 2
        assert await jm.taskmanager_ids() == pods
    report_figures("JobManager pod crash figures", figures)
