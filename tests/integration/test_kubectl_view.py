"""What kubectl shows of rmd, read from kubectl's own output: the rmd.dev/state label as it
changes (``kubectl get pods -L rmd.dev/state --watch``), the Events in ``kubectl describe pod``,
and a storm of start failures aggregated into one counted Event (``kubectl get events``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from rmd.kube.statelabel import STATE_LABEL
from rmd_dev.kubectl import kubectl
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo, create_cpu_limit_range
from tests.integration.daemon_harness import TM_SELECTOR, running_daemon
from tests.support.flink import create_jobmanager_deployment
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def kubectl_watch(kubeconfig: Path, *args: str) -> AsyncIterator[list[str]]:
    """``kubectl ARGS --watch`` in the background; the lines it printed so far."""
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        *args,
        "--watch",
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    lines: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            lines.append(line.decode().rstrip())

    reader = asyncio.create_task(read())
    try:
        yield lines
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()
        await reader


async def kubectl_events(
    kubeconfig: Path, namespace: str, *, field_selector: str, columns: str
) -> list[list[str]]:
    """``kubectl get events`` of the objects ``field_selector`` picks, as rows of columns."""
    out = await kubectl(
        kubeconfig,
        "-n",
        namespace,
        "get",
        "events",
        "--field-selector",
        field_selector,
        "-o",
        f"custom-columns={columns}",
        "--no-headers",
    )
    return [line.split() for line in out.splitlines()]


def label_history(lines: list[str], pod: str) -> list[str]:
    """The STATE column of ``kubectl get pods -L`` for ``pod``, repeats folded."""
    history: list[str] = []
    for line in lines:
        fields = line.split()
        if fields and fields[0] == pod and (not history or history[-1] != fields[-1]):
            history.append(fields[-1])
    return history


async def test_kubectl_shows_the_state_label_as_it_changes_and_the_events(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    cluster_id = "flink-kubectl"
    await create_jobmanager_deployment(kube_api, namespace=namespace, name=cluster_id)
    kubeconfig = dev_cluster.kubeconfig
    selector = f"{TM_SELECTOR},app={cluster_id}"
    async with (
        kubectl_watch(
            kubeconfig, "-n", namespace, "get", "pods", "-l", selector, "-L", STATE_LABEL
        ) as watched,
        running_daemon(
            dev_cluster=dev_cluster,
            kube_api=kube_api,
            namespace=namespace,
            cluster_id=cluster_id,
            extra={"resourcemanager.taskmanager-timeout": "3 s"},
        ) as daemon,
    ):
        await daemon.put_requirement("job-k", 4)
        await daemon.wait_fulfilled("job-k")
        (pod,) = await daemon.live_pod_names()

        async def shown(state: str) -> bool:
            out = await kubectl(
                kubeconfig, "-n", namespace, "get", "pods", pod, "-L", STATE_LABEL, "--no-headers"
            )
            return out.split()[-1] == state

        await eventually(lambda: shown("registered"), timeout=20, what="kubectl: registered")
        described = ""

        async def described_events() -> bool:
            nonlocal described
            described = await kubectl(kubeconfig, "-n", namespace, "describe", "pod", pod)
            return "TaskManagerRegistered" in described

        await eventually(described_events, timeout=20, what="kubectl describe shows Events")
        events_part = described.split("Events:", 1)[1]
        assert "TaskManagerCreated" in events_part
        assert "rmd created this TaskManager pod for slots that job(s) job-k wait for" in (
            " ".join(events_part.split())
        )
        assert "rmd" in events_part.split()  # the From column: source.component

        async with daemon.http.delete(f"{daemon.url}/v1/jobs/job-k") as resp:
            assert resp.status == 204

        # "idle" lasts only the 3-s timeout: a kubectl get per poll can miss it on a busy
        # machine, so the --watch output (every change, none missed) is what shows it.
        async def watched_idle() -> bool:
            return "idle" in label_history(watched, pod)

        await eventually(watched_idle, timeout=20, what="kubectl --watch: idle")

        async def pod_gone() -> bool:
            return not await daemon.live_pod_names()

        await eventually(pod_gone, timeout=30, what="the idle pod released")

        async def watched_releasing() -> bool:
            return label_history(watched, pod)[-1:] == ["releasing"]

        await eventually(watched_releasing, timeout=20, what="kubectl --watch: releasing")
        assert label_history(watched, pod) == ["pending", "registered", "idle", "releasing"]

        async def released_event() -> bool:
            rows = await kubectl_events(
                kubeconfig,
                namespace,
                field_selector=f"involvedObject.name={pod}",
                columns="REASON:.reason,SOURCE:.source.component",
            )
            return ["IdleReleased", "rmd"] in rows

        await eventually(released_event, timeout=20, what="kubectl get events: IdleReleased")
        # One patch per change: pending came with the create; registered, idle, releasing.
        metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
        assert 'rmd_pod_state_label_patches_total{result="written"} 3.0' in metrics


async def test_a_storm_of_start_failures_is_one_counted_event(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    cluster_id = "flink-storm"
    await create_jobmanager_deployment(kube_api, namespace=namespace, name=cluster_id)
    kubeconfig = dev_cluster.kubeconfig
    extra = {
        # Every pod stays in ErrImagePull and times out before it registers.
        "kubernetes.taskmanager.annotations": "emulator.rmd.dev/image-pull-error:true",
        "resourcemanager.taskmanager-registration.timeout": "1 s",
        "resourcemanager.start-worker.max-failure-rate": "100",
    }
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        cluster_id=cluster_id,
        extra=extra,
    ) as daemon:
        await daemon.put_requirement("job-s", 8)
        rows: list[list[str]] = []

        async def counted() -> bool:
            nonlocal rows
            rows = await kubectl_events(
                kubeconfig,
                namespace,
                field_selector=f"involvedObject.kind=Deployment,involvedObject.name={cluster_id}",
                columns="REASON:.reason,COUNT:.count,TYPE:.type",
            )
            failed = [row for row in rows if row[0] == "TaskManagerStartFailed"]
            return len(failed) == 1 and int(failed[0][1]) >= 6

        await eventually(counted, timeout=60, what="one TaskManagerStartFailed Event, count ≥ 6")
        assert next(row for row in rows if row[0] == "TaskManagerStartFailed")[2] == "Warning"
        timed_out = await kubectl_events(
            kubeconfig,
            namespace,
            field_selector="reason=RegistrationTimedOut",
            columns="OBJECT:.involvedObject.name,COUNT:.count",
        )
        assert len(timed_out) >= 6  # one per pod, each pod's own Event
        assert {count for _, count in timed_out} == {"1"}
        metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
        assert 'rmd_kubernetes_events_written_total{write="patch"}' in metrics


async def test_a_pod_an_admission_plugin_denies_is_a_paced_start_failure_in_its_words(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    """A LimitRange whose maximum the TaskManager pod exceeds: LimitRanger answers 403, not
    RBAC, not quota. The job's reason and a Warning Event on the Deployment quote the API
    server, the failures are counted by reason, and the start-failure limit paces them."""
    cluster_id = "flink-denied"
    await create_jobmanager_deployment(kube_api, namespace=namespace, name=cluster_id)
    core = client.CoreV1Api(kube_api)
    await create_cpu_limit_range(core, namespace=namespace, name="small", max_cpu="50m")
    words = "maximum cpu usage per Container is 50m, but limit is 100m"
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        cluster_id=cluster_id,
        extra={"resourcemanager.start-worker.max-failure-rate": "3"},  # cpu: 0.1 (harness)
    ) as daemon:
        await daemon.put_requirement("job-d", 4)

        async def throttled() -> bool:
            return await daemon.metric("rmd_starts_throttled") == 1

        await eventually(throttled, timeout=30, what="the start-failure limit to trip")
        view = await daemon.get_json("/v1/jobs/job-d")
        assert "AdmissionDenied" in view["unfulfilled_reason"]
        assert words in view["unfulfilled_reason"]
        failed = await daemon.metric("rmd_pod_create_failures_total", reason="AdmissionDenied")
        assert failed == await daemon.metric("rmd_start_failures_total") == 3  # then paused

        async def event_message() -> bool:
            events = await core.list_namespaced_event(
                namespace,
                field_selector=f"involvedObject.name={cluster_id},reason=TaskManagerStartFailed",
                _request_timeout=REQUEST_TIMEOUT,
            )
            return any(words in (event.message or "") for event in events.items)

        await eventually(event_message, timeout=30, what="a TaskManagerStartFailed Event")
    listed = await core.list_namespaced_pod(namespace, label_selector=TM_SELECTOR)
    assert listed.items == []
