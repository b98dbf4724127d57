"""The daemon end to end: the real daemon over HTTP, on the real control plane, with
TaskManager agents as real processes under the node emulator."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from rmd_dev.cluster import write_kubeconfig
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo, manifest
from tests.integration.daemon_harness import (
    PodCensus,
    RunningDaemon,
    agent_pid,
    pod_census,
    running_daemon,
)
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

SLOTS_PER_TM = 4


async def _registered(daemon: RunningDaemon) -> set[str]:
    return {t["taskmanager_id"] for t in await daemon.taskmanagers() if t["state"] == "registered"}


def _check_census(census: PodCensus) -> None:
    assert census.violations == [], census.violations[:3]


async def test_declaring_slots_creates_exactly_the_pods_needed(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace
    ) as daemon:
        async with pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as c:
            c.limit = lambda: math.ceil(9 / SLOTS_PER_TM)
            view = await daemon.put_requirement("job-a", 9)
            assert view["slots_required"] == 9
            view = await daemon.wait_fulfilled("job-a")
            assert view["slots_allocated"] == 9
            assert len({s["slot_id"] for s in view["slots"]}) == 9
            pods = await daemon.pods()
            names = sorted(p.metadata.name for p in pods)
            cid = daemon.cluster_id
            assert names == [f"{cid}-taskmanager-1-{i}" for i in (1, 2, 3)]
            for pod in pods:
                assert pod.metadata.labels["type"] == "flink-native-kubernetes"
                assert pod.metadata.labels["app"] == cid
                assert pod.metadata.labels["component"] == "taskmanager"
            assert await _registered(daemon) == set(names)
            for slot in view["slots"]:
                assert slot["taskmanager_id"] in names
                assert slot["address"].startswith("127.")

            # Declaring the same number again is harmless: nothing new is created.
            again = await daemon.put_requirement("job-a", 9)
            assert again["fulfilled"] is True
            status = await daemon.get_json("/v1/status")
            assert status["taskmanagers"]["requested"] == 0
            assert status["taskmanagers"]["pending"] == 0
            assert await daemon.live_pod_names() == set(names)
            assert c.seen == set(names)
            _check_census(c)

            metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
            assert "rmd_num_registered_taskmanagers 3.0" in metrics
            assert "rmd_task_slots 12.0" in metrics
            assert "rmd_task_slots_available 3.0" in metrics


async def test_scale_down_and_delete_release_idle_taskmanagers_at_the_timeout(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    idle_timeout = 3.0
    extra = {"resourcemanager.taskmanager-timeout": f"{idle_timeout:.0f} s"}
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, extra=extra
    ) as daemon:
        async with pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as c:
            c.limit = lambda: 2
            await daemon.put_requirement("job-a", 8)
            await daemon.wait_fulfilled("job-a")
            assert len(await daemon.live_pod_names()) == 2
            loop = asyncio.get_running_loop()

            # Scale down to 4: one TaskManager becomes idle and goes at the idle timeout.
            scaled_at = loop.time()
            view = await daemon.put_requirement("job-a", 4)
            assert view["slots_allocated"] == 4
            tms = await daemon.taskmanagers()
            idle = [t for t in tms if t["slots_allocated"] == 0]
            assert len(idle) == 1
            assert idle[0]["idle_since"] is not None
            await eventually(
                lambda: _deleted(c, idle[0]["taskmanager_id"]),
                timeout=idle_timeout + 10,
                what="idle TaskManager released",
            )
            released_after = _delete_time(c, idle[0]["taskmanager_id"]) - scaled_at
            assert idle_timeout - 0.3 <= released_after <= idle_timeout + 1.0, released_after

            # DELETE of the job frees the rest; released at the idle timeout too.
            deleted_at = loop.time()
            async with daemon.http.delete(f"{daemon.url}/v1/jobs/job-a") as resp:
                assert resp.status == 204
            await daemon.get_json("/v1/jobs/job-a", expect=404)
            last = next(t for t in tms if t["slots_allocated"] > 0)["taskmanager_id"]
            await eventually(
                lambda: _deleted(c, last),
                timeout=idle_timeout + 10,
                what="last TaskManager released",
            )
            released_after = _delete_time(c, last) - deleted_at
            assert idle_timeout - 0.3 <= released_after <= idle_timeout + 1.0, released_after

            async def none_left() -> bool:
                return not await daemon.live_pod_names() and not await daemon.taskmanagers()

            await eventually(none_left, timeout=20, what="no pod and no TaskManager left")
            _check_census(c)


async def _deleted(census: PodCensus, name: str) -> bool:
    return name in census.left_at


def _delete_time(census: PodCensus, name: str) -> float:
    return census.left_at[name]


async def test_a_pod_deleted_from_outside_is_replaced(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace
    ) as daemon:
        await daemon.put_requirement("job-b", 4)
        view = await daemon.wait_fulfilled("job-b")
        victim = view["slots"][0]["taskmanager_id"]
        await daemon.core.delete_namespaced_pod(victim, namespace, _request_timeout=REQUEST_TIMEOUT)

        async def replaced() -> bool:
            names = await _registered(daemon)
            return len(names) == 1 and victim not in names

        await eventually(replaced, timeout=60, what="replacement TaskManager registered")
        view = await daemon.wait_fulfilled("job-b")
        assert {s["taskmanager_id"] for s in view["slots"]} != {victim}
        metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
        # Two real orderings: the watch shows the deletion first (lost), or the agent, told
        # to stop by the kubelet, says goodbye first (deregistered). Either way: one loss.
        lost = 'rmd_taskmanagers_lost_total{reason="pod-deleted"} 1.0' in metrics
        goodbye = 'rmd_pods_deleted_total{reason="deregistered"} 1.0' in metrics
        assert lost != goodbye, metrics


async def test_a_pod_being_deleted_is_replaced_before_its_grace_period_ends(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace
    ) as daemon:
        await daemon.put_requirement("job-g", 4)
        view = await daemon.wait_fulfilled("job-g")
        victim = view["slots"][0]["taskmanager_id"]
        pid = await asyncio.to_thread(agent_pid, victim)
        assert pid is not None, f"no agent process found for {victim}"
        os.kill(pid, signal.SIGSTOP)  # it cannot say goodbye: only the watch tells
        try:
            await daemon.core.delete_namespaced_pod(
                victim, namespace, grace_period_seconds=120, _request_timeout=REQUEST_TIMEOUT
            )

            async def replaced() -> bool:
                names = await _registered(daemon)
                return len(names) == 1 and victim not in names

            await eventually(replaced, timeout=60, what="replacement TaskManager registered")
            # The old pod is still terminating (its grace period runs for 120 s).
            pod = await daemon.core.read_namespaced_pod(
                victim, namespace, _request_timeout=REQUEST_TIMEOUT
            )
            assert pod.metadata.deletion_timestamp is not None
            metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
            assert 'rmd_taskmanagers_lost_total{reason="pod-deleted"} 1.0' in metrics
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def test_a_taskmanager_that_never_registers_is_replaced_at_the_timeout(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    # No agent runs in these pods (no emulator.rmd.dev/run annotation): they never register.
    extra = {
        "kubernetes.taskmanager.annotations": "purpose:never-registers",
        "resourcemanager.taskmanager-registration.timeout": "2 s",
    }
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, extra=extra
    ) as daemon:
        async with pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as c:
            await daemon.put_requirement("job-c", 4)
            first = f"{daemon.cluster_id}-taskmanager-1-1"

            async def first_replaced() -> bool:
                return first in c.seen and first not in c.alive and len(c.seen) >= 2

            await eventually(first_replaced, timeout=30, what="unregistered pod replaced")
            view = await daemon.get_json("/v1/jobs/job-c")
            assert view["fulfilled"] is False
            metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
            assert 'rmd_pods_deleted_total{reason="registration-timeout"}' in metrics
            assert "rmd_start_failures_total" in metrics


async def test_image_pull_failure_is_visible_in_job_view_and_metrics(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    extra = {"kubernetes.taskmanager.annotations": "emulator.rmd.dev/image-pull-error:true"}
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, extra=extra
    ) as daemon:
        await daemon.put_requirement("job-d", 4)

        async def problem_shown() -> bool:
            view = await daemon.get_json("/v1/jobs/job-d")
            reasons = {p["reason"] for p in view.get("problems", [])}
            return bool(reasons & {"ErrImagePull", "ImagePullBackOff"})

        await eventually(problem_shown, timeout=30, what="image pull problem in the job view")
        view = await daemon.get_json("/v1/jobs/job-d")
        assert view["fulfilled"] is False
        assert view["unfulfilled_reason"]
        metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
        assert 'rmd_pod_problems_total{reason="ErrImagePull"}' in metrics


async def test_at_the_slot_cap_the_job_waits_with_a_reason_and_no_extra_pod(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    extra = {"slotmanager.number-of-slots.max": "4"}
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, extra=extra
    ) as daemon:
        async with pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as c:
            c.limit = lambda: 1
            await daemon.put_requirement("job-e", 8)

            async def four_allocated() -> bool:
                view = await daemon.get_json("/v1/jobs/job-e")
                return int(view["slots_allocated"]) == 4

            await eventually(four_allocated, timeout=60, what="4 slots allocated at the cap")
            view = await daemon.get_json("/v1/jobs/job-e")
            assert view["fulfilled"] is False
            assert "slotmanager.number-of-slots.max" in view["unfulfilled_reason"]
            assert len(await daemon.live_pod_names()) == 1
            _check_census(c)


async def test_crashing_pods_are_created_within_the_failure_rate(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    extra = {
        "kubernetes.taskmanager.annotations": "emulator.rmd.dev/crash-after:0.2",
        "resourcemanager.start-worker.max-failure-rate": "3",
        "resourcemanager.start-worker.retry-interval": "1 s",
    }
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, extra=extra
    ) as daemon:
        async with pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as c:
            await daemon.put_requirement("job-f", 4)

            async def throttled() -> bool:
                status = await daemon.get_json("/v1/status")
                return status.get("starts_throttled_until") is not None

            await eventually(throttled, timeout=30, what="start-failure limit tripped")

            async def started() -> set[str]:
                """Every pod started so far: seen by the census, or a TaskManager the daemon
                still knows (one it decides to start is known from that moment)."""
                return c.seen | {t["taskmanager_id"] for t in await daemon.taskmanagers()}

            started_by_trip = await started()
            # 3 failures per minute allowed; +1 for a create in flight when it tripped.
            assert len(started_by_trip) <= 3 + 1, sorted(started_by_trip)

            async def pause_over() -> bool:
                status = await daemon.get_json("/v1/status")
                return status["starts_throttled_until"] is None

            # The window observed ends once the pause is over (by the daemon's own clock) and
            # the daemon has decided again: re-declaring the same requirement (harmless) makes
            # it decide at once.
            await eventually(pause_over, timeout=30, what="the start pause to end")
            view = await daemon.put_requirement("job-f", 4)
            after_pause = await started()
            # No pod started since the limit tripped: not during the pause, nor after it.
            assert after_pause - started_by_trip == set(), sorted(after_pause)
            assert len(after_pause) <= 3 + 1, sorted(after_pause)
            assert view["fulfilled"] is False
            # Starts stay held back (limited, or paused again) until failures leave the minute.
            assert "resourcemanager.start-worker.max-failure-rate" in view["unfulfilled_reason"]


BAD_REQUESTS = [
    ("PUT", "/v1/jobs/job-x/requirements", b"{not json", 400),
    ("PUT", "/v1/jobs/job-x/requirements", b'{"slots": "8"}', 400),
    ("PUT", "/v1/jobs/job-x/requirements", b'{"slots": 8.5}', 400),
    ("PUT", "/v1/jobs/job-x/requirements", b'{"slots": true}', 400),
    ("PUT", "/v1/jobs/job-x/requirements", b"[8]", 400),
    ("PUT", "/v1/jobs/job-x/requirements", b'{"slots": -1}', 422),
    ("PUT", "/v1/jobs/job-x/requirements", b'{"slots": 10000000000}', 422),
    ("PUT", "/v1/jobs/bad%20id/requirements", b'{"slots": 1}', 422),
    ("PUT", "/v1/jobs/" + "j" * 129 + "/requirements", b'{"slots": 1}', 422),
    ("GET", "/v1/jobs/job-x?wait=soon", b"", 400),
    ("GET", "/v1/jobs/job-x?wait=-1", b"", 422),
    ("GET", "/v1/jobs/unknown-job", b"", 404),
    ("DELETE", "/v1/jobs/unknown-job", b"", 404),
    (
        "POST",
        "/v1/taskmanagers",
        b'{"taskmanager_id": "not-ours", "address": "1.2.3.4:6122", "slots": 4}',
        403,
    ),
    ("POST", "/v1/taskmanagers", b'{"taskmanager_id": "x", "address": "nohost", "slots": 4}', 422),
    ("POST", "/v1/taskmanagers", b'{"taskmanager_id": "x", "address": "h:1", "slots": 0}', 422),
    ("PUT", "/v1/taskmanagers/unknown-tm/heartbeat", b"{}", 404),
    ("DELETE", "/v1/taskmanagers/unknown-tm", b"", 404),
    ("PATCH", "/v1/jobs/job-a", b"{}", 405),
    ("GET", "/v1/nothing-here", b"", 404),
]


async def test_bad_input_gets_problem_json_and_changes_nothing(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace
    ) as daemon:
        await daemon.put_requirement("job-a", 4)
        await daemon.wait_fulfilled("job-a")

        async def snapshot() -> tuple[object, ...]:
            tms = await daemon.taskmanagers()
            for tm in tms:
                tm.pop("idle_since", None)
            return (
                await daemon.get_json("/v1/jobs"),
                tms,
                await daemon.live_pod_names(),
            )

        before = await snapshot()
        for method, path, body, status in BAD_REQUESTS:
            async with daemon.http.request(
                method,
                f"{daemon.url}{path}",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp:
                assert resp.status == status, (method, path, resp.status, await resp.text())
                assert resp.content_type == "application/problem+json", (method, path)
                problem = await resp.json(content_type=None)
                assert problem["status"] == status
                assert problem["title"]
                assert problem["detail"]
        assert await snapshot() == before


async def test_a_silent_taskmanager_is_lost_at_the_heartbeat_timeout(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    extra = {"heartbeat.timeout": "3 s"}
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, extra=extra
    ) as daemon:
        await daemon.put_requirement("job-h", 4)
        view = await daemon.wait_fulfilled("job-h")
        victim = view["slots"][0]["taskmanager_id"]
        pid = await asyncio.to_thread(agent_pid, victim)
        assert pid is not None, f"no agent process found for {victim}"
        # Freeze the agent: its pod stays Running, but it stops heartbeating.
        os.kill(pid, signal.SIGSTOP)
        try:

            async def replaced() -> bool:
                tms = {t["taskmanager_id"]: t for t in await daemon.taskmanagers()}
                return victim not in tms or tms[victim]["state"] == "releasing"

            await eventually(replaced, timeout=30, what="silent TaskManager given up")
            view = await daemon.wait_fulfilled("job-h")
            assert victim not in {s["taskmanager_id"] for s in view["slots"]}
            metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
            assert 'rmd_taskmanagers_lost_total{reason="heartbeat-timeout"} 1.0' in metrics
            assert 'rmd_pods_deleted_total{reason="heartbeat-timeout"} 1.0' in metrics
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def test_taskmanager_pods_are_owned_by_the_jobmanager_deployment(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    cluster_id = "flink-owned"
    apps = client.AppsV1Api(kube_api)
    labels = {"app": cluster_id, "component": "jobmanager"}
    owner = await apps.create_namespaced_deployment(
        namespace,
        body=manifest(
            {
                "metadata": {"name": cluster_id},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "jm", "image": "rmd:dev"}]},
                    },
                },
            }
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, cluster_id=cluster_id
    ) as daemon:
        await daemon.put_requirement("job-o", 8)
        await daemon.wait_fulfilled("job-o")
        pods = await daemon.pods()
        assert len(pods) == 2
        for pod in pods:
            (ref,) = pod.metadata.owner_references
            assert (ref.kind, ref.name, ref.uid) == ("Deployment", cluster_id, owner.metadata.uid)
            assert ref.controller is True
            assert ref.block_owner_deletion is True
            env = {e.name: e.value for e in pod.spec.containers[0].env if e.value}
            assert env["RMD_RESOURCEMANAGER_URL"] == daemon.url

        # Deleting the JobManager Deployment garbage-collects every TaskManager pod.
        await apps.delete_namespaced_deployment(
            cluster_id, namespace, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT
        )

        async def collected() -> bool:
            return not await daemon.live_pod_names()

        await eventually(collected, timeout=60, what="garbage collection of the TaskManagers")


async def test_redundant_taskmanagers_are_kept_warm_while_jobs_run(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    idle_timeout = 2.0
    extra = {
        "slotmanager.redundant-taskmanager-num": "1",
        "resourcemanager.taskmanager-timeout": f"{idle_timeout:.0f} s",
    }
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, extra=extra
    ) as daemon:
        async with pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as c:
            c.limit = lambda: 1 + 1  # one for the demand, one spare
            await daemon.put_requirement("job-w", 4)
            await daemon.wait_fulfilled("job-w")

            async def spare_registered() -> bool:
                return len(await _registered(daemon)) == 2

            await eventually(spare_registered, timeout=60, what="the spare TaskManager")

            async def spare_kept() -> bool:
                return any(t["kept_as_spare"] for t in await daemon.taskmanagers())

            # The idle check at the spare's deadline ran and kept it: it is needed as a spare.
            await eventually(spare_kept, timeout=idle_timeout + 10, what="the spare kept idle")
            (spare,) = [t for t in await daemon.taskmanagers() if t["kept_as_spare"]]
            assert spare["state"] == "registered"
            assert spare["slots_allocated"] == 0
            idle_since = datetime.fromisoformat(spare["idle_since"]).timestamp()
            assert time.time() >= idle_since + idle_timeout  # kept past its idle timeout
            assert len(await _registered(daemon)) == 2
            assert c.left_at == {}

            # With no slot demand left, spares are not needed: both go at the idle timeout.
            await daemon.put_requirement("job-w", 0)

            async def all_released() -> bool:
                return not await daemon.live_pod_names()

            await eventually(all_released, timeout=30, what="TaskManagers released")
            _check_census(c)


async def test_a_pod_cancelled_while_its_create_hangs_is_deleted_once_created(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    """Demand drops while a create is held by a slow API server: a delete sent at once would
    404 and the pod created afterwards would leak. It must be deleted once it exists."""
    kubeconfig = write_kubeconfig(
        tmp_path / "through-proxy.kubeconfig", server=proxy.url, token=dev_cluster.admin_token
    )
    gate = asyncio.Event()
    proxy.inject(method="POST", path_regex=r"/pods$", status=None, gate=gate, times=1)
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, kubeconfig=kubeconfig
    ) as daemon:
        await daemon.put_requirement("job-c", 4)

        async def create_held() -> bool:
            return [t["state"] for t in await daemon.taskmanagers()] == ["requested"]

        await eventually(create_held, timeout=30, what="the create in flight")
        await daemon.put_requirement("job-c", 0)  # cancelled while its create hangs
        # Decided at once, and shown: releasing, its delete held until the create is answered.
        (tm,) = await daemon.taskmanagers()
        assert (tm["state"], tm["delete_waits_for_create"]) == ("releasing", True)
        assert proxy.requests_matching(method="DELETE", path_regex=r"/pods/") == []
        create_let_through_at = time.monotonic()  # the proxy's clock for requests' arrival
        gate.set()  # the API server answers at last: the pod now exists

        async def nothing_left() -> bool:
            return not await daemon.live_pod_names() and not await daemon.taskmanagers()

        await eventually(nothing_left, timeout=30, what="the late pod deleted")
        metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
        assert 'rmd_pods_deleted_total{reason="excess"} 1.0' in metrics
        deletes = proxy.requests_matching(method="DELETE", path_regex=r"/pods/")
        assert [d.status for d in deletes] == [200]  # one delete, after the pod existed
        # ... and none reached the API server during the whole time the create hung.
        assert deletes[0].at >= create_let_through_at
