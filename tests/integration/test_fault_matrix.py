"""The fault matrix (issue #12): one row per fault, each against the real ``rmd daemon``
process under a steady workload, with the invariants and the time to converge of
:mod:`tests.integration.fault_matrix`. Faults that stop control-plane components run on a
cluster of their own (kube-apiserver with ``--watch-cache=false``, so that watches read etcd
and a compaction makes the API server itself answer 410).

CI runs the short profile (``make test``); ``make reliability`` runs the full one and writes
docs/RELIABILITY.md from the rows.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from rmd_dev.cluster import (
    ClusterState,
    Component,
    free_port,
    port_is_free,
    process_alive,
    state_path,
    write_kubeconfig,
)
from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    _devcluster,
    apply_shipped_rbac,
    create_pod_quota,
    manifest,
    service_account_kubeconfig,
)
from tests.integration.daemon_harness import RunningDaemon
from tests.integration.fault_matrix import (
    Injected,
    Workload,
    dedicated_cluster,
    fault_row,
    fault_seconds,
    steady_workload,
    steady_workload_on,
)
from tests.support.faultproxy import FaultProxy
from tests.support.serviceproxy import ServiceProxy
from tests.support.waiting import eventually, eventually_true

pytestmark = pytest.mark.integration

RAISED = 8  # job-b during the fault: a third TaskManager must come through it


@pytest.fixture(scope="module")
def fault_cluster() -> Iterator[DevClusterInfo]:
    with dedicated_cluster("--watch-cache=false") as info:
        yield info


WorkloadIn = Callable[..., AbstractAsyncContextManager[Workload]]


@pytest.fixture
def workload_in(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> WorkloadIn:
    """:func:`steady_workload` on the session's cluster, in this test's namespace (keyword
    arguments: the rest of its parameters)."""
    return functools.partial(
        steady_workload, dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace
    )


async def job_reason(daemon: RunningDaemon, job_id: str) -> str:
    view = await daemon.get_json(f"/v1/jobs/{job_id}")
    return str(view["unfulfilled_reason"] or "")


def restart_in_background(
    cluster: DevClusterInfo, component: str, *, down: float
) -> asyncio.Task[None]:
    """``rmd dev-cluster restart COMPONENT --down-for DOWN`` as a task; awaiting it raises
    if the restart failed."""

    async def restart() -> None:
        restarted = await asyncio.to_thread(
            _devcluster, "restart", "--dir", str(cluster.dir), component, f"--down-for={down}"
        )
        assert restarted.returncode == 0, restarted.stderr

    return asyncio.create_task(restart())


async def test_kube_apiserver_restart(fault_cluster: DevClusterInfo) -> None:
    down = fault_seconds(ci=10.0, full=30.0)
    port = int(fault_cluster.server.rsplit(":", 1)[1])

    async def fault(workload: Workload) -> Injected:
        restart = restart_in_background(fault_cluster, "kube-apiserver", down=down)
        await eventually_true(lambda: port_is_free(port), what="kube-apiserver to stop")
        await workload.declare("job-b", RAISED)
        reason = ""

        async def told() -> bool:
            nonlocal reason
            reason = await job_reason(workload.daemon, "job-b")
            return "API server" in reason

        await eventually(told, timeout=down, what="the job's reason to name the API server")
        await restart
        return Injected(
            fault=f"kube-apiserver stopped {down:g} s and restarted",
            what_happened=f"job reason: {reason[:90]}…",
            fault_seconds=down,
        )

    await fault_row(steady_workload_on(fault_cluster), fault)


async def test_etcd_restart(fault_cluster: DevClusterInfo) -> None:
    """etcd killed and started again after ``down`` seconds (same data dir, same ports): the
    API server answers with errors or not at all meanwhile, and its watches end."""
    down = fault_seconds(ci=10.0, full=30.0)
    etcd = current_component(fault_cluster, "etcd")

    async def fault(workload: Workload) -> Injected:
        restart = restart_in_background(fault_cluster, "etcd", down=down)
        await eventually_true(lambda: not process_alive(etcd), what="etcd to stop")
        await workload.declare("job-b", RAISED)
        await restart
        reason = await job_reason(workload.daemon, "job-b")
        return Injected(
            fault=f"etcd stopped {down:g} s and restarted",
            what_happened=f"job reason once etcd was back: {reason[:90] or '(fulfilled)'}",
            fault_seconds=down,
        )

    await fault_row(steady_workload_on(fault_cluster), fault)


def current_component(cluster: DevClusterInfo, name: str) -> Component:
    """``name`` as the cluster's state file has it now (a restart row changes its pid)."""
    state = ClusterState.load(state_path(cluster.dir))
    [found] = [c for c in state.components if c.name == name]
    return found


async def etcd_revision(etcd_url: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{etcd_url}/v3/kv/range", json={"key": base64.b64encode(b"/").decode()}) as r,
    ):
        body = await r.json()
    return int(body["header"]["revision"])


async def compact_etcd(etcd_url: str, revision: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{etcd_url}/v3/kv/compaction", json={"revision": str(revision), "physical": True}
        ) as r,
    ):
        assert r.status == 200, await r.text()


async def test_a_real_410_gone_after_an_etcd_compaction(
    fault_cluster: DevClusterInfo, tmp_path: Path
) -> None:
    async def fault(workload: Workload) -> Injected:
        daemon = workload.daemon
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Move etcd past the daemon's resourceVersion, compact it, and cut the watch: the
        # daemon watches again from its old resourceVersion and the API server itself (no
        # watch cache) answers 410.
        for number in range(5):
            await daemon.core.create_namespaced_config_map(
                daemon.namespace,
                body=manifest({"metadata": {"name": f"bump-{number}"}}),
                _request_timeout=REQUEST_TIMEOUT,
            )
        await compact_etcd(fault_cluster.etcd_url, await etcd_revision(fault_cluster.etcd_url))
        assert proxy.drop_watches() >= 1
        await workload.declare("job-b", RAISED)

        async def gone() -> bool:
            return await daemon.metric("rmd_watch_restarts_total", reason="gone") >= 1

        await eventually(gone, timeout=30, what="the daemon's watch to get 410 Gone")
        return Injected(
            fault="etcd compacted past the watch's resourceVersion (real 410 Gone)",
            what_happened=f"410 → relist {loop.time() - started:.1f} s after the compaction",
            fault_seconds=0.0,
        )

    async with FaultProxy(upstream=fault_cluster.server, ca_file=fault_cluster.ca_file) as proxy:
        kubeconfig = write_kubeconfig(
            tmp_path / "proxy.kubeconfig", server=proxy.url, token=fault_cluster.admin_token
        )
        await fault_row(steady_workload_on(fault_cluster, kubeconfig=kubeconfig), fault)


async def test_etcd_paused(fault_cluster: DevClusterInfo) -> None:
    paused = fault_seconds(ci=15.0, full=30.0)
    etcd = current_component(fault_cluster, "etcd")

    async def fault(workload: Workload) -> Injected:
        daemon = workload.daemon
        loop = asyncio.get_running_loop()
        os.kill(etcd.pid, signal.SIGSTOP)
        try:
            stopped = loop.time()
            await workload.declare("job-b", RAISED)
            reason = ""

            async def told() -> bool:
                nonlocal reason
                reason = await job_reason(daemon, "job-b")
                readyz = await daemon.get_json("/readyz")
                return "API server" in reason and "kubernetes_writes" in readyz

            await eventually(told, timeout=paused + 20, what="the hang in reason and /readyz")
            told_after = loop.time() - stopped
            # The pause lasts ``paused`` seconds: an interval being staged.
            await asyncio.sleep(max(0.0, stopped + paused - loop.time()))
        finally:
            os.kill(etcd.pid, signal.SIGCONT)
        return Injected(
            fault=f"etcd stopped (SIGSTOP) {paused:g} s: writes hang",
            what_happened=f"told after {told_after:.1f} s (readyz detail, job reason: "
            f"{reason[:70]}…)",
            fault_seconds=max(paused, told_after),
        )

    await fault_row(steady_workload_on(fault_cluster), fault)


async def test_resource_quota_exhausted(
    workload_in: WorkloadIn, kube_api: client.ApiClient, namespace: str
) -> None:
    refused_for = fault_seconds(ci=15.0, full=60.0)
    core = client.CoreV1Api(kube_api)
    await create_pod_quota(core, namespace=namespace, name="pods", pods=2)

    async def fault(workload: Workload) -> Injected:
        daemon = workload.daemon
        loop = asyncio.get_running_loop()
        await workload.declare("job-b", RAISED)  # a third pod: over the quota
        refused_since = loop.time()

        async def told() -> bool:
            return "QuotaExceeded" in await job_reason(daemon, "job-b")

        await eventually(told, timeout=15, what="the job's reason to name the quota")
        reason = await job_reason(daemon, "job-b")
        # The quota holds for ``refused_for`` seconds: an interval being staged.
        await asyncio.sleep(max(0.0, refused_since + refused_for - loop.time()))
        refused = await daemon.metric("rmd_kubernetes_api_errors_total", code="403")
        # No hot loop: the start-failure limit (10 a minute, then one per 3 s retry
        # interval) bounds the creates.
        assert refused <= 12 + refused_for / 3, refused
        await core.patch_namespaced_resource_quota(
            "pods",
            namespace,
            body={"spec": {"hard": {"pods": "3"}}},
            _request_timeout=REQUEST_TIMEOUT,
        )
        return Injected(
            fault=f"ResourceQuota exhausted for {refused_for:g} s (403 exceeded quota)",
            what_happened=f"{refused:.0f} creates refused, reason: {reason[:80]}…",
            fault_seconds=refused_for,
        )

    await fault_row(workload_in(), fault)


async def test_permission_lost_and_restored(
    workload_in: WorkloadIn,
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    lost_for = fault_seconds(ci=15.0, full=60.0)
    await apply_shipped_rbac(dev_cluster, namespace=namespace)
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    kubeconfig = await service_account_kubeconfig(
        core, dev_cluster, namespace=namespace, account="rmd", path=tmp_path / "rmd.kubeconfig"
    )

    async def fault(workload: Workload) -> Injected:
        daemon = workload.daemon
        loop = asyncio.get_running_loop()
        await rbac.delete_namespaced_role_binding(
            "rmd", namespace, _request_timeout=REQUEST_TIMEOUT
        )
        lost_since = loop.time()
        await workload.declare("job-b", RAISED)

        async def told() -> bool:
            return "refuses the daemon's pod creates (Forbidden" in await job_reason(
                daemon, "job-b"
            )

        await eventually(told, timeout=15, what="the job's reason to name the refusal")
        reason = await job_reason(daemon, "job-b")
        # The permission stays lost for ``lost_for`` seconds: an interval being staged.
        await asyncio.sleep(max(0.0, lost_since + lost_for - loop.time()))
        await apply_shipped_rbac(dev_cluster, namespace=namespace)  # the RoleBinding again
        return Injected(
            fault=f"RoleBinding deleted for {lost_for:g} s, then restored",
            what_happened=f"reason: {reason[:80]}…",
            fault_seconds=lost_for,
        )

    await fault_row(workload_in(kubeconfig=kubeconfig), fault)


async def test_token_file_rotated(
    workload_in: WorkloadIn, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """rmd.auth.token-file rewritten (and the Secret the pods read): the daemon takes the
    new token without a restart; running agents, which keep the old one, stay."""
    core = client.CoreV1Api(kube_api)
    token_file = tmp_path / "token"
    token_file.write_text("token-one\n")
    await core.create_namespaced_secret(
        namespace,
        body=manifest({"metadata": {"name": "rmd-token"}, "stringData": {"token": "token-one"}}),
        _request_timeout=REQUEST_TIMEOUT,
    )
    extra = {"rmd.auth.token-file": str(token_file), "rmd.auth.token-secret": "rmd-token"}

    async def fault(workload: Workload) -> Injected:
        daemon = workload.daemon
        loop = asyncio.get_running_loop()
        token_file.write_text("token-two\n")
        await core.patch_namespaced_secret(
            "rmd-token",
            namespace,
            body={"stringData": {"token": "token-two"}},
            _request_timeout=REQUEST_TIMEOUT,
        )
        rotated = loop.time()

        async def new_token_taken() -> bool:
            async with daemon.http.get(
                f"{daemon.url}/v1/status", headers={"Authorization": "Bearer token-two"}
            ) as resp:
                return resp.status == 200

        await eventually(new_token_taken, timeout=10, what="the daemon to take the new token")
        taken_after = loop.time() - rotated
        daemon.token = "token-two"  # the JobMaster moves on; the running agents do not
        await workload.declare("job-b", RAISED)  # a new pod: it reads token-two
        return Injected(
            fault="rmd.auth.token-file and the Secret rotated",
            what_happened=f"new token taken after {taken_after:.1f} s without a restart; "
            "running agents kept the old one",
            fault_seconds=0.0,
        )

    await fault_row(workload_in(extra=extra, token="token-one"), fault)


# ---------------------------------------------------------------- faults of the fault proxy
# The daemon talks to the session's API server through tests/support/faultproxy.py.

PODS = r"/namespaces/[^/]+/pods$"


async def test_bursts_of_500_503_and_429_with_retry_after(
    workload_in: WorkloadIn, proxy: FaultProxy, proxied_kubeconfig: Path
) -> None:
    burst = int(fault_seconds(ci=3, full=6))

    async def fault(workload: Workload) -> Injected:
        loop = asyncio.get_running_loop()
        started = loop.time()
        creates = [
            proxy.inject(method="POST", path_regex=PODS, status=503, times=burst),
            proxy.inject(method="POST", path_regex=PODS, status=500, times=burst),
            proxy.inject(method="POST", path_regex=PODS, status=429, retry_after=1, times=burst),
        ]
        # The LIST and the WATCH after a cut watch get their share while the creates do.
        reads = [
            proxy.inject(method="GET", path_regex=PODS, status=503, times=burst),
            proxy.inject(method="GET", path_regex=PODS, status=429, retry_after=1, times=burst),
        ]
        assert proxy.drop_watches() >= 1
        await workload.declare("job-b", RAISED)
        await eventually_true(
            lambda: all(fault.exhausted for fault in creates), timeout=120, what="every burst"
        )
        proxy.clear_faults()
        read_errors = sum(fault.hits for fault in reads)
        lasted = loop.time() - started
        return Injected(
            fault=f"bursts of {burst} x 503, 500 and 429 (Retry-After: 1) on pod creates, lists "
            "and watches",
            what_happened=f"retried through them in {lasted:.1f} s ({read_errors} on reads)",
            fault_seconds=lasted,
        )

    await fault_row(workload_in(kubeconfig=proxied_kubeconfig), fault)


async def test_connections_reset_mid_request_and_mid_watch(
    workload_in: WorkloadIn, proxy: FaultProxy, proxied_kubeconfig: Path
) -> None:
    async def fault(workload: Workload) -> Injected:
        loop = asyncio.get_running_loop()
        started = loop.time()
        faults = [
            # Reset before the API server saw the create, and after it made the pod.
            proxy.inject(method="POST", path_regex=PODS, status=0, times=2),
            proxy.inject(method="POST", path_regex=PODS, status=0, forward_first=True, times=1),
        ]
        await workload.declare("job-b", RAISED)
        cuts = 0
        for _ in range(3):
            await eventually_true(lambda: proxy.open_watches >= 1, what="the watch again")
            cuts += proxy.drop_watches()
        await eventually_true(
            lambda: all(fault.exhausted for fault in faults), timeout=60, what="every reset"
        )
        return Injected(
            fault=f"3 pod creates reset (1 after the pod was made), the watch cut {cuts} times",
            what_happened="",
            fault_seconds=loop.time() - started,
        )

    await fault_row(workload_in(kubeconfig=proxied_kubeconfig), fault)


async def test_responses_slower_than_the_request_timeout(
    workload_in: WorkloadIn, proxy: FaultProxy, proxied_kubeconfig: Path
) -> None:
    timeout = 2.0

    async def fault(workload: Workload) -> Injected:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Answered (and carried out) 2 s after the daemon gave up: it sends the create again.
        slow = proxy.inject(method="POST", path_regex=PODS, status=None, delay=2 * timeout, times=2)
        await workload.declare("job-b", RAISED)
        await eventually_true(lambda: slow.exhausted, timeout=60, what="the slow creates")
        return Injected(
            fault=f"2 pod creates answered after {2 * timeout:g} s (request-timeout {timeout:g} s)",
            what_happened="",
            fault_seconds=loop.time() - started + 2 * timeout,
        )

    extra = {"rmd.kubernetes.request-timeout": f"{timeout:g} s"}
    await fault_row(workload_in(kubeconfig=proxied_kubeconfig, extra=extra), fault)


SILENCE_BOUND = 6.0  # the row's rmd.kubernetes.watch-idle-timeout (default 70 s)
SILENCE_SLACK = 4.0  # renewal, the replayed events and a busy 2-core machine


async def test_a_watch_that_goes_silent(
    workload_in: WorkloadIn, proxy: FaultProxy, proxied_kubeconfig: Path
) -> None:
    """The pod watch answers 200 and then not a byte, without closing. The daemon must
    notice the silence itself (``rmd.kubernetes.watch-idle-timeout``), renew the watch and
    learn what happened meanwhile: the pod it created during the silence started running,
    which only a pod event tells it (the full LIST is 10 minutes away here)."""
    silence_ends = asyncio.Event()  # set at the end: until then the silent watch stays open

    async def fault(workload: Workload) -> Injected:
        daemon = workload.daemon
        loop = asyncio.get_running_loop()
        renewals = await daemon.metric("rmd_watch_restarts_total", reason="idle")
        before = await daemon.live_pod_names()
        silence = proxy.inject(
            method="GET",
            path_regex=PODS,
            status=200,
            watch_only=True,
            silent=True,
            gate=silence_ends,
        )
        assert proxy.drop_watches() >= 1
        await eventually_true(lambda: silence.exhausted, what="the daemon's watch to go silent")
        silent_from = loop.time()
        await workload.declare("job-b", RAISED)
        started: list[str] = []

        async def new_pod_running() -> bool:
            started[:] = [
                pod.metadata.name
                for pod in await daemon.pods()
                if pod.metadata.name not in before and pod.status.phase == "Running"
            ]
            return bool(started)

        await eventually(new_pod_running, timeout=SILENCE_BOUND, what="the new pod to run")
        ran_after = loop.time() - silent_from  # within the silence: the daemon was not told

        async def daemon_knows() -> bool:
            phases = {tm["taskmanager_id"]: tm["pod_phase"] for tm in await daemon.taskmanagers()}
            return phases.get(started[0]) == "Running"

        await eventually(
            daemon_knows,
            timeout=SILENCE_BOUND + SILENCE_SLACK - (loop.time() - silent_from),
            what="the daemon to renew its silent watch and see the pod running",
        )
        learned_after = loop.time() - silent_from
        renewed = await daemon.metric("rmd_watch_restarts_total", reason="idle") - renewals
        assert renewed >= 1, "the daemon did not itself renew the silent watch"
        return Injected(
            fault=f"the pod watch silent (200, then no byte, not closed), watch-idle-timeout "
            f"{SILENCE_BOUND:g} s",
            what_happened=f"renewed the silent watch itself; the new pod ran {ran_after:.1f} s "
            f"into the silence, the daemon saw it run {learned_after:.1f} s into it",
            fault_seconds=learned_after,
        )

    extra = {
        "rmd.kubernetes.watch-idle-timeout": f"{SILENCE_BOUND:g} s",
        "rmd.kubernetes.resync-interval": "10 min",
    }
    try:
        await fault_row(workload_in(kubeconfig=proxied_kubeconfig, extra=extra), fault)
    finally:
        silence_ends.set()


async def test_the_daemon_stopped_past_a_heartbeat_timeout(workload_in: WorkloadIn) -> None:
    stall = fault_seconds(ci=15.0, full=30.0)  # the harness' heartbeat.timeout is 10 s

    async def fault(workload: Workload) -> Injected:
        daemon = workload.daemon
        daemon.signal(signal.SIGSTOP)
        try:
            # The stall lasts ``stall`` seconds: an interval being staged.
            await asyncio.sleep(stall)
        finally:
            daemon.signal(signal.SIGCONT)
        await workload.declare("job-b", RAISED)

        async def noticed() -> bool:
            return await daemon.metric("rmd_daemon_stalled_seconds_total") > 0

        await eventually(noticed, timeout=10, what="the daemon to notice its stall")
        stalled = await daemon.metric("rmd_daemon_stalled_seconds_total")
        return Injected(
            fault=f"the daemon's process stopped (SIGSTOP) {stall:g} s, heartbeat timeout 10 s",
            what_happened=f"noticed a stall of {stalled:.1f} s, gave the TaskManagers a fresh "
            "heartbeat timeout",
            fault_seconds=stall,
        )

    await fault_row(workload_in(), fault)


async def test_agents_cut_off_from_the_daemon_past_the_heartbeat_timeout(
    workload_in: WorkloadIn,
) -> None:
    """The agents reach the daemon through a Service stand-in; it drops every connection
    and refuses new ones for longer than heartbeat.timeout (10 s): the daemon declares the
    TaskManagers lost, deletes their pods and creates new ones, which register once the
    agents get through again."""
    cut_for = fault_seconds(ci=15.0, full=30.0)
    port = free_port()
    backend = f"127.0.0.1:{port}"

    async def fault(workload: Workload) -> Injected:
        daemon = workload.daemon
        before = await daemon.live_pod_names()
        # A lost TaskManager's pod is deleted and its replacement created at once (no
        # waiting for the delete): for a moment both are alive.
        workload.census.limit = lambda: workload.demand_pods + len(before)
        service.remove(backend)
        service.cut()
        loop = asyncio.get_running_loop()
        cut_at = loop.time()

        async def lost() -> bool:
            return await daemon.metric("rmd_taskmanagers_lost_total") >= len(before)

        await eventually(lost, timeout=cut_for + 10, what="the cut-off TaskManagers lost")
        lost_after = loop.time() - cut_at
        # The partition lasts ``cut_for`` seconds: an interval being staged.
        await asyncio.sleep(max(0.0, cut_at + cut_for - loop.time()))
        service.add(backend)

        async def replaced() -> None:
            assert not before & await daemon.live_pod_names(), "the lost pods are replaced"

        return Injected(
            fault=f"agents cut off from the daemon {cut_for:g} s (heartbeat timeout 10 s)",
            what_happened=f"TaskManagers lost after {lost_after:.1f} s, pods replaced (the "
            "replacement created beside the pod being deleted)",
            fault_seconds=cut_for,
            taskmanagers_die=True,
            then=replaced,
        )

    async with ServiceProxy([backend]) as service:
        extra = {"rmd.taskmanager.resourcemanager-url": service.url}
        await fault_row(workload_in(extra=extra, port=port), fault)
