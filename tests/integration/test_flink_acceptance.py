"""Issue 8's acceptance tests with real Flink JVMs: rmd following a real JobManager
(``rmd.flink.rest-url``) under the adaptive scheduler, with two jobs placed by Flink
differently from rmd's own records, through a 30 s REST outage, and fed bad answers.

Each test runs one JobManager pod (Flink's JobManager + ``rmd daemon`` as local processes,
:func:`tests.support.flink.flink_jobmanager`) and two TaskManager pods at most, whose agents
run real TaskManager JVMs under the node emulator. The default scheduler's happy path is in
``test_flink_follower_real.py``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from rmd_dev.nodes import set_node_capacity
from rmd_dev.provision import FlinkInstall
from tests.conftest import DevClusterInfo
from tests.integration.daemon_harness import PodCensus, pod_census
from tests.support.flink import (
    FlinkJobManager,
    all_tasks_running,
    flink_jobmanager,
    following_flink,
    following_keys,
    live_taskmanager_names,
    report_figures,
    rmd_jobs,
    wait_all_tasks_running,
)
from tests.support.flinkproxy import FlinkRestProxy
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

JVM_DEADLINE = 240.0  # TaskManager JVMs start in 10-17 s on an idle machine; CI is not idle
IDLE_TIMEOUT = 5.0
RELEASE_SLACK = 6.0  # polls (0.5 s), the pod watch, the emulator stopping the JVM


# ---------------------------------------------------------------------------- helpers


async def _rmd_taskmanagers(jm: FlinkJobManager) -> dict[str, Any]:
    body = await jm.daemon_json("GET", "/v1/taskmanagers")
    return {tm["taskmanager_id"]: tm for tm in body["taskmanagers"]}


async def _readyz_flink(jm: FlinkJobManager) -> dict[str, Any]:
    body = await jm.daemon_json("GET", "/readyz")
    flink: dict[str, Any] = body["flink"]
    return flink


async def _metric(jm: FlinkJobManager, name: str, labels: Mapping[str, str] | None = None) -> float:
    """One sample of the daemon's /metrics (0 when it is not there)."""
    async with jm.http.get(f"{jm.daemon_url}/metrics") as response:
        text = await response.text()
    wanted = ",".join(f'{key}="{value}"' for key, value in (labels or {}).items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if wanted else "")
    found = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def _job_state(jm: FlinkJobManager, job_id: str) -> str:
    return str((await jm.get(f"/jobs/{job_id}"))["state"])


async def _vertex_parallelism(jm: FlinkJobManager, job_id: str) -> list[int]:
    job = await jm.get(f"/jobs/{job_id}")
    return [int(vertex["parallelism"]) for vertex in job["vertices"]]


async def _flink_taskmanagers_of(jm: FlinkJobManager, job_id: str) -> set[str]:
    """The TaskManagers where Flink runs the job's tasks."""
    job = await jm.get(f"/jobs/{job_id}")
    found: set[str] = set()
    for vertex in job["vertices"]:
        body = await jm.get(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
        found |= {str(tm["taskmanager-id"]) for tm in body["taskmanagers"]}
    return found


@pytest.fixture
async def flink_proxy() -> AsyncIterator[FlinkRestProxy]:
    async with FlinkRestProxy() as proxy:
        yield proxy


def _follow_through(proxy: FlinkRestProxy, **keys: str) -> dict[str, str]:
    return following_keys(
        idle_timeout=IDLE_TIMEOUT,
        **{"rmd.flink.rest-url": proxy.url, "rmd.flink.request-timeout": "2 s", **keys},
    )


async def _released(census: PodCensus, names: set[str]) -> bool:
    return names <= census.left_at.keys()


# ---------------------------------------------------------------------------- 2. adaptive


@pytest.mark.timeout(900)
async def test_adaptive_job_starts_on_the_first_taskmanager_and_rescales_when_the_next_registers(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
) -> None:
    """Under ``jobmanager.scheduler: adaptive`` the job's demand is its upper bound (4 slots,
    2 pods). The cluster has room for one TaskManager pod at first (the nodes' cpu is cut),
    so Flink starts the job at the parallelism that TaskManager allows (2); once room is
    made, rmd's second pod is scheduled, registers, and Flink rescales the job to 4."""
    core = client.CoreV1Api(kube_api)
    cluster_id = "flink-adaptive"
    figures: dict[str, float] = {}
    nodes = dev_cluster.node_names
    async with (
        flink_jobmanager(
            flink=flink_install,
            kube_api=kube_api,
            kubeconfig=dev_cluster.kubeconfig,
            namespace=namespace,
            cluster_id=cluster_id,
            work_dir=tmp_path / "jobmanager",
            scheduler="adaptive",
            follow_flink=True,
            extra=following_keys(
                idle_timeout=IDLE_TIMEOUT,
                **{
                    "jobmanager.adaptive-scheduler.executing.cooldown-after-rescaling": "1 s",
                    "jobmanager.adaptive-scheduler.executing.resource-stabilization-timeout": "1 s",
                },
            ),
        ) as jm,
        pod_census(kube_api, namespace=namespace, cluster_id=cluster_id) as census,
    ):
        census.limit = lambda: 2
        await eventually(lambda: following_flink(jm), what="/readyz: following Flink", timeout=30)
        # Room for one TaskManager pod (0.5 cpu each) on the first node, none on the others.
        try:
            await set_node_capacity(core, nodes[:1], capacity={"cpu": "900m"})
            await set_node_capacity(core, nodes[1:], capacity={"cpu": "0"})
            jar_id = await jm.upload_jar(rate_job_jar)
            submitted = time.monotonic()
            job_id = await jm.submit(jar_id, parallelism=4)

            async def declared_at_upper_bound() -> bool:
                job = (await rmd_jobs(jm)).get(job_id)
                return job is not None and job["slots_required"] == 4

            await eventually(declared_at_upper_bound, what="the job declared with 4 slots")

            async def running_at(parallelism: int) -> bool:
                return await _vertex_parallelism(jm, job_id) == [
                    parallelism
                ] * 2 and await all_tasks_running(jm, job_id)

            await eventually(
                lambda: running_at(2),
                what="the job RUNNING at parallelism 2 on the first TaskManager",
                timeout=JVM_DEADLINE,
                interval=0.5,
            )
            figures["submit → RUNNING at 2"] = time.monotonic() - submitted
            pods = await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)
            assert len(pods) == 2, pods
            first = await jm.taskmanager_ids()
            assert len(first) == 1, (first, pods)
            assert first < pods, (first, pods)
            [waiting] = pods - first
            assert (await _rmd_taskmanagers(jm))[waiting]["state"] == "pending"
        finally:
            await set_node_capacity(core, nodes, capacity={})
        room_made = time.monotonic()
        await eventually(
            lambda: running_at(4),
            what="the job rescaled by Flink to parallelism 4, every task RUNNING",
            timeout=JVM_DEADLINE,
            interval=0.5,
        )
        figures["room made → RUNNING at 4"] = time.monotonic() - room_made
        assert await jm.taskmanager_ids() == pods
        assert (
            await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id) == pods
        )
        assert (await rmd_jobs(jm))[job_id]["fulfilled"] is True
        assert census.violations == []
        await jm.cancel(job_id)
    report_figures("adaptive rescale figures", figures)


# ---------------------------------------------------------------------------- 3. two jobs


@pytest.mark.timeout(900)
async def test_two_jobs_placed_by_flink_unlike_rmds_records_never_lose_a_taskmanager_in_use(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
) -> None:
    """3 slots per TaskManager, jobs A and B of parallelism 2. rmd packs: A's two slots on one
    TaskManager. Flink spreads (``taskmanager.load-balance.mode: SLOTS``): one task of each
    job on each TaskManager. Cancelling the job that holds a TaskManager alone in rmd's
    records leaves that TaskManager idle to rmd but busy in Flink: it stays past the idle
    timeout and the other job keeps running; once that one is cancelled too, both go.

    Both TaskManagers are started first by a job declared over rmd's API (``prewarm``), so
    Flink sees two empty TaskManagers when its jobs arrive; ``slotmanager.number-of-slots.max``
    (6) keeps rmd from starting a third while ``prewarm`` still holds its slots."""
    core = client.CoreV1Api(kube_api)
    cluster_id = "flink-twojobs"
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
                idle_timeout=IDLE_TIMEOUT,
                **{
                    "taskmanager.numberOfTaskSlots": "3",
                    "slotmanager.number-of-slots.max": "6",
                    "taskmanager.load-balance.mode": "SLOTS",
                },
            ),
        ) as jm,
        pod_census(kube_api, namespace=namespace, cluster_id=cluster_id) as census,
    ):
        census.limit = lambda: 2
        await eventually(lambda: following_flink(jm), what="/readyz: following Flink", timeout=30)
        started = time.monotonic()
        await jm.daemon_json("PUT", "/v1/jobs/prewarm/requirements", {"slots": 4})

        async def both_in_flink() -> bool:
            names = await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)
            return len(names) == 2 and await jm.taskmanager_ids() == names

        await eventually(
            both_in_flink, what="2 TaskManagers in Flink", timeout=JVM_DEADLINE, interval=0.5
        )
        names = await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)
        figures["2 TaskManagers registered"] = time.monotonic() - started

        jar_id = await jm.upload_jar(rate_job_jar)
        job_a = await jm.submit(jar_id, parallelism=2)

        async def fulfilled(job_id: str) -> bool:
            job = (await rmd_jobs(jm)).get(job_id)
            return job is not None and bool(job["fulfilled"])

        await eventually(lambda: fulfilled(job_a), what="job A declared and fulfilled by rmd")
        job_b = await jm.submit(jar_id, parallelism=2)

        async def declared_b() -> bool:
            return job_b in await rmd_jobs(jm)

        await eventually(declared_b, what="job B declared (capped: it waits for prewarm's slots)")
        await jm.daemon_json("DELETE", "/v1/jobs/prewarm")
        await eventually(lambda: fulfilled(job_b), what="job B fulfilled by rmd")

        async def both_running() -> bool:
            return await all_tasks_running(jm, job_a) and await all_tasks_running(jm, job_b)

        await eventually(
            both_running, what="every task of A and B RUNNING", timeout=JVM_DEADLINE, interval=0.5
        )

        # The two layouts: rmd's records, and where Flink runs the tasks.
        rmd_layout = {
            name: {slot["job_id"] for slot in tm["slots"] if slot["job_id"]}
            for name, tm in (await _rmd_taskmanagers(jm)).items()
        }
        flink_layout = {job: await _flink_taskmanagers_of(jm, job) for job in (job_a, job_b)}
        candidates = [
            (alone, name, other)
            for name, jobs in rmd_layout.items()
            if len(jobs) == 1
            for alone in jobs
            for other in (job_a, job_b)
            if other != alone and name in flink_layout[other]
        ]
        assert candidates, (
            "Flink placed the jobs as rmd's records say; nothing to test: "
            f"rmd {rmd_layout}, Flink {flink_layout}"
        )
        cancelled, kept, survivor = candidates[0]
        await jm.cancel(cancelled)

        async def rmd_idle() -> bool:
            tm = (await _rmd_taskmanagers(jm))[kept]
            return cancelled not in await rmd_jobs(jm) and tm["idle_since"] is not None

        await eventually(rmd_idle, what=f"{kept} idle in rmd's records after cancelling")
        idle_since = (await _rmd_taskmanagers(jm))[kept]["idle_since"]

        # rmd's own timer for it has run out (by the daemon's clock) and the follower has
        # polled Flink since: Flink still runs the survivor's task there, so it stays.
        async def timeout_passed() -> bool:
            body = await jm.daemon_json("GET", "/v1/taskmanagers")
            tm = next(t for t in body["taskmanagers"] if t["taskmanager_id"] == kept)
            since = datetime.fromisoformat(tm["idle_since"]).timestamp()
            return time.time() - since > IDLE_TIMEOUT + 3

        await eventually(timeout_passed, what="the idle timeout passed in rmd's view", timeout=30)
        assert (await _rmd_taskmanagers(jm))[kept]["idle_since"] == idle_since
        assert await _metric(jm, "rmd_flink_taskmanagers", {"usage": "busy"}) == 2.0
        assert census.left_at == {}, census.left_at
        assert (
            await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id) == names
        )
        assert kept in await _flink_taskmanagers_of(jm, survivor)
        assert await all_tasks_running(jm, survivor)

        # The survivor cancelled too: now both are idle to Flink as well, and both go.
        loop = asyncio.get_running_loop()
        cancelled_at = loop.time()
        await jm.cancel(survivor)
        await eventually(
            lambda: _released(census, names),
            what="both TaskManagers released",
            timeout=IDLE_TIMEOUT + 30,
        )
        after = max(census.left_at[name] - cancelled_at for name in names)
        assert after <= IDLE_TIMEOUT + RELEASE_SLACK, after
        figures["last cancel → both released"] = after
        assert census.violations == []
    report_figures("two-jobs figures", figures)


# ---------------------------------------------------------------------------- 4. REST outage

OUTAGE = 30.0


@pytest.mark.timeout(900)
async def test_a_30s_rest_outage_releases_and_creates_nothing_and_following_resumes(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
    flink_proxy: FlinkRestProxy,
) -> None:
    """The daemon reads Flink through a proxy that is stopped for 30 s. The job is cancelled
    meanwhile: its TaskManagers stay while rmd cannot know, /readyz and the metrics say Flink
    is unreachable; when the proxy is back the job is removed, the pods go after the idle
    timeout, and a job submitted then gets a pod again."""
    core = client.CoreV1Api(kube_api)
    cluster_id = "flink-outage"
    figures: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    async with (
        flink_jobmanager(
            flink=flink_install,
            kube_api=kube_api,
            kubeconfig=dev_cluster.kubeconfig,
            namespace=namespace,
            cluster_id=cluster_id,
            work_dir=tmp_path / "jobmanager",
            extra=_follow_through(flink_proxy),
        ) as jm,
        pod_census(kube_api, namespace=namespace, cluster_id=cluster_id) as census,
    ):
        flink_proxy.upstream = jm.rest_url
        census.limit = lambda: 2
        await eventually(lambda: following_flink(jm), what="/readyz: following Flink", timeout=30)
        jar_id = await jm.upload_jar(rate_job_jar)
        job_id = await jm.submit(jar_id, parallelism=4)
        await wait_all_tasks_running(
            jm, job_id, what="every task of the parallelism-4 job RUNNING", timeout=JVM_DEADLINE
        )
        names = await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)
        assert len(names) == 2
        assert await _metric(jm, "rmd_flink_rest_reachable") == 1.0

        await flink_proxy.stop()
        down_at = loop.time()

        async def unreachable() -> bool:
            flink = await _readyz_flink(jm)
            return flink["state"] == "failing" and flink["reachable"] is False

        await eventually(unreachable, what="/readyz: Flink unreachable", timeout=30)
        figures["REST down → /readyz says unreachable"] = loop.time() - down_at
        await jm.cancel(job_id)  # Flink itself answers: only rmd's way to it is cut

        async def cancelled_and_idle_in_flink() -> bool:
            if await _job_state(jm, job_id) != "CANCELED":
                return False
            body = await jm.get("/taskmanagers")
            return all(tm["freeSlots"] == tm["slotsNumber"] for tm in body["taskmanagers"])

        await eventually(
            cancelled_and_idle_in_flink, what="job CANCELED, TaskManagers idle in Flink"
        )

        async def outage_lasted() -> bool:
            failing_for = (await _readyz_flink(jm))["failing_for_seconds"]
            return isinstance(failing_for, float) and failing_for >= OUTAGE

        await eventually(outage_lasted, what=f"the outage lasting {OUTAGE:.0f} s", timeout=60)
        # Nothing released, nothing created; the last demand kept; said so.
        assert census.left_at == {}, census.left_at
        assert census.seen == names, census.seen
        assert (
            await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id) == names
        )
        assert (await rmd_jobs(jm))[job_id]["slots_required"] == 4
        flink = await _readyz_flink(jm)
        assert "unreachable" in flink["detail"], flink
        assert "releases no TaskManager" in flink["detail"], flink
        assert await _metric(jm, "rmd_flink_rest_reachable") == 0.0
        assert await _metric(jm, "rmd_flink_poll_failures_total", {"reason": "unreachable"}) > 0
        assert "flink_rest_failing" in jm.log("daemon")

        await flink_proxy.start()
        back_at = loop.time()
        await eventually(lambda: following_flink(jm), what="following Flink again", timeout=60)

        async def removed() -> bool:
            return job_id not in await rmd_jobs(jm)

        await eventually(removed, what="the cancelled job removed", timeout=30)
        await eventually(
            lambda: _released(census, names),
            what="both TaskManagers released after the idle timeout",
            timeout=IDLE_TIMEOUT + 60,
        )
        after = {name: census.left_at[name] - back_at for name in names}
        assert all(IDLE_TIMEOUT - 0.5 <= s <= IDLE_TIMEOUT + 30 for s in after.values()), after
        figures["REST back → pods released"] = max(after.values())
        assert await _metric(jm, "rmd_flink_rest_reachable") == 1.0

        # Demand is followed again: a new job gets a pod.
        resumed = time.monotonic()
        job_2 = await jm.submit(jar_id, parallelism=2)
        await wait_all_tasks_running(
            jm,
            job_2,
            what="a job submitted after the outage RUNNING on a new pod",
            timeout=JVM_DEADLINE,
        )
        figures["submit after outage → RUNNING"] = time.monotonic() - resumed
        new = await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)
        assert len(new) == 1, new
        assert not new & names, new
        assert census.violations == []
        await jm.cancel(job_2)
    report_figures("REST outage figures", figures)


# ---------------------------------------------------------------------------- 5. bad input


@pytest.mark.timeout(900)
async def test_bad_input_from_flink_is_logged_and_counted_and_the_daemon_keeps_serving(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
    flink_proxy: FlinkRestProxy,
) -> None:
    """A job needing more slots than ``slotmanager.number-of-slots.max``, a scheduler rmd does
    not know and malformed answers (the proxy rewrites ``/jobs/overview``): each gives a log
    line and a metric; the daemon stays up, serves, and changes no pod."""
    core = client.CoreV1Api(kube_api)
    cluster_id = "flink-badinput"
    async with (
        flink_jobmanager(
            flink=flink_install,
            kube_api=kube_api,
            kubeconfig=dev_cluster.kubeconfig,
            namespace=namespace,
            cluster_id=cluster_id,
            work_dir=tmp_path / "jobmanager",
            extra=_follow_through(flink_proxy, **{"slotmanager.number-of-slots.max": "2"}),
        ) as jm,
        pod_census(kube_api, namespace=namespace, cluster_id=cluster_id) as census,
    ):
        flink_proxy.upstream = jm.rest_url
        census.limit = lambda: 1
        daemon = jm.processes["daemon"]
        await eventually(lambda: following_flink(jm), what="/readyz: following Flink", timeout=30)
        jar_id = await jm.upload_jar(rate_job_jar)
        job_id = await jm.submit(jar_id, parallelism=3)

        async def problem(reason: str) -> bool:
            return await _metric(jm, "rmd_flink_job_problems_total", {"reason": reason}) >= 1

        # Above the cap: declared, capped at 2 slots (one pod), said once.
        await eventually(lambda: problem("above-slot-cap"), what="above-slot-cap counted")
        assert re.search(
            r"flink_job_problem.*above-slot-cap|above-slot-cap.*flink_job_problem", jm.log("daemon")
        )
        assert "slotmanager.number-of-slots.max" in jm.log("daemon")
        assert (await rmd_jobs(jm))[job_id]["slots_required"] == 3

        async def one_registered() -> bool:
            tms = await _rmd_taskmanagers(jm)
            return len(tms) == 1 and all(tm["state"] == "registered" for tm in tms.values())

        await eventually(
            one_registered, what="one TaskManager (the cap)", timeout=JVM_DEADLINE, interval=0.5
        )
        names = await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id)

        # A scheduler rmd does not know: the job's demand stays the vertices' parallelism.
        def mystery_scheduler(body: Any) -> Any:
            for job in body["jobs"]:
                job["schedulerType"] = "Mystery"
            return body

        flink_proxy.rewrite(path_regex=r"^/jobs/overview$", transform=mystery_scheduler)
        await eventually(
            lambda: problem("unknown-scheduler-answer"), what="unknown scheduler counted"
        )
        assert "Mystery" in jm.log("daemon")
        assert (await rmd_jobs(jm))[job_id]["slots_required"] == 3
        assert await following_flink(jm)

        # Malformed answers: JSON of the wrong shape, then no JSON at all.
        for label, transform in (
            ("wrong shape", lambda body: {"jobs": [{"jid": 42}]}),
            ("not JSON", lambda body: "<html>proxy error</html>"),
        ):
            flink_proxy.clear_rewrites()
            failures = await _metric(jm, "rmd_flink_poll_failures_total", {"reason": "malformed"})
            flink_proxy.rewrite(path_regex=r"^/jobs/overview$", transform=transform)

            async def counted(before: float = failures) -> bool:
                now = await _metric(jm, "rmd_flink_poll_failures_total", {"reason": "malformed"})
                return now > before

            await eventually(counted, what=f"a {label} overview counted as malformed")
            flink = await _readyz_flink(jm)
            assert flink["state"] == "failing", flink
            assert flink["reachable"] is True, flink
            assert "answering badly" in flink["detail"], flink
            assert (await rmd_jobs(jm))[job_id]["slots_required"] == 3
        assert "flink_rest_failing" in jm.log("daemon")

        flink_proxy.clear_rewrites()
        await eventually(lambda: following_flink(jm), what="following again once answers are good")
        assert daemon.returncode is None, jm.log("daemon")
        assert "Traceback" not in jm.log("daemon")
        assert (
            await live_taskmanager_names(core, namespace=namespace, cluster_id=cluster_id) == names
        )
        assert census.left_at == {}
        assert census.violations == []
        await jm.cancel(job_id)
