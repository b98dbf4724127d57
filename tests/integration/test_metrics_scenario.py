"""Issue 11's acceptance: a scripted scenario on the local control plane; at each step the
daemon's /metrics is scraped and checked against the real state read from the API server
(pods by phase and scheduling, slots of the running ones), and `rmd status` shows the same.

Steps: a job on two TaskManagers; every node cordoned, so a second job's pod stays
Unschedulable (pending reason `unschedulable`, a job waiting); nodes uncordoned, the pod
registers; the first job removed, its TaskManagers released after the idle timeout.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from rmd_dev.kubectl import kubectl
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo
from tests.integration.daemon_harness import TM_SELECTOR, RunningDaemon, running_daemon
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

SLOTS_PER_TASKMANAGER = 4  # daemon_harness's taskmanager.numberOfTaskSlots
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(daemon: RunningDaemon) -> Samples:
    text = await daemon.metrics()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def cluster_state(daemon: RunningDaemon) -> dict[str, int]:
    """What the API server says about the daemon's TaskManager pods."""
    listed = await daemon.core.list_namespaced_pod(
        daemon.namespace,
        label_selector=f"{TM_SELECTOR},app={daemon.cluster_id}",
        _request_timeout=REQUEST_TIMEOUT,
    )
    alive = [pod for pod in listed.items if not pod.metadata.deletion_timestamp]
    unschedulable = [
        pod
        for pod in alive
        if any(
            c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
            for c in pod.status.conditions or []
        )
    ]
    running = [pod for pod in alive if pod.status.phase == "Running"]
    return {"alive": len(alive), "running": len(running), "unschedulable": len(unschedulable)}


async def metrics_match(daemon: RunningDaemon, expected: dict[str, Any]) -> bool:
    """The scrape and the cluster agree with ``expected`` (and with each other)."""
    samples, state = await scrape(daemon), await cluster_state(daemon)
    states = {
        s: value(samples, "rmd_taskmanagers", state=s)
        for s in ("requested", "pending", "registered", "releasing")
    }
    reasons = {
        labels[0][1]: count
        for (name, labels), count in samples.items()
        if name == "rmd_pending_taskmanagers"
    }
    registered, slots = states["registered"], value(samples, "rmd_task_slots")
    observed: dict[str, Any] = {
        "registered": registered,
        "pending": states["pending"] + states["requested"],
        "slots": slots,
        "slots_available": value(samples, "rmd_task_slots_available"),
        "unschedulable": reasons["unschedulable"],
        "jobs_waiting": value(samples, "rmd_jobs_waiting"),
        "cluster": state,
    }
    matches = all(observed[key] == wanted for key, wanted in expected.items())
    # Whatever the step: registered TaskManagers are running pods, their slots are the gauge,
    # pending-by-reason sums to the pending gauge.
    consistent = (
        slots == SLOTS_PER_TASKMANAGER * registered
        and sum(reasons.values()) == value(samples, "rmd_num_pending_taskmanagers")
        and registered <= state["running"]
    )
    return matches and consistent


async def expect(daemon: RunningDaemon, what: str, **expected: Any) -> None:
    await eventually(lambda: metrics_match(daemon, expected), timeout=60, what=what)


async def rmd_status_json(daemon: RunningDaemon) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "rmd", "status", "--url", daemon.url, "-o", "json"),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    document: dict[str, Any] = json.loads(out)
    return document


async def set_cordoned(dev_cluster: DevClusterInfo, *, cordoned: bool) -> None:
    verb = "cordon" if cordoned else "uncordon"
    for node in dev_cluster.node_names:
        await kubectl(dev_cluster.kubeconfig, verb, node)


async def test_metrics_follow_the_real_state_step_by_step(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        extra={"resourcemanager.taskmanager-timeout": "2 s"},
    ) as daemon:
        await expect(daemon, "nothing yet", registered=0, pending=0, slots=0)

        await daemon.put_requirement("first", 8)
        await daemon.wait_fulfilled("first")
        await expect(
            daemon,
            "two registered TaskManagers",
            registered=2,
            pending=0,
            slots=8,
            slots_available=0,
            jobs_waiting=0,
            cluster={"alive": 2, "running": 2, "unschedulable": 0},
        )

        await set_cordoned(dev_cluster, cordoned=True)
        try:
            await daemon.put_requirement("second", 4)
            await expect(
                daemon,
                "the second job's pod unschedulable",
                registered=2,
                pending=1,
                unschedulable=1,
                jobs_waiting=1,
                cluster={"alive": 3, "running": 2, "unschedulable": 1},
            )
            shown = await rmd_status_json(daemon)
            [waiting] = [job for job in shown["jobs"] if not job["fulfilled"]]
            assert waiting["job_id"] == "second"
            assert "Unschedulable" in (waiting["unfulfilled_reason"] or "")
            assert shown["status"]["pending_taskmanagers_by_reason"]["unschedulable"] == 1
            samples = await scrape(daemon)
            assert value(samples, "rmd_job_oldest_wait_seconds") > 0
            assert value(samples, "rmd_pod_problems_total", reason="Unschedulable") == 1
        finally:
            await set_cordoned(dev_cluster, cordoned=False)

        await daemon.wait_fulfilled("second")
        await expect(
            daemon,
            "the third TaskManager registered",
            registered=3,
            pending=0,
            unschedulable=0,
            slots=12,
            slots_available=0,
            jobs_waiting=0,
            cluster={"alive": 3, "running": 3, "unschedulable": 0},
        )

        async with daemon.http.delete(f"{daemon.url}/v1/jobs/first") as response:
            assert response.status == 204
        await expect(
            daemon,
            "the first job's TaskManagers released after the idle timeout",
            registered=1,
            slots=4,
            slots_available=0,
            cluster={"alive": 1, "running": 1, "unschedulable": 0},
        )
        samples = await scrape(daemon)
        assert value(samples, "rmd_pods_deleted_total", reason="idle") == 2
        assert value(samples, "rmd_pods_created_total") == 3
