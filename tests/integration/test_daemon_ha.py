"""High availability on the real control plane: several ``rmd daemon`` processes elect one
leader through the Lease; a standby sends callers to it; a killed leader is replaced within
the lease duration without a pod too many; a frozen leader, woken after it lost the Lease,
creates and deletes nothing.

The daemons sit behind :class:`tests.support.serviceproxy.ServiceProxy` (the JobManager
Service): the TaskManager agents and the JobMaster client are given its address only.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from rmd.client import RmdClient
from rmd.config.files import parse_config_yaml
from rmd.kube.statestore import state_config_map_name
from rmd_dev.cluster import free_port
from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    apply_shipped_rbac,
    service_account_kubeconfig,
)
from tests.integration.daemon_harness import (
    TM_SELECTOR,
    PodCensus,
    daemon_overrides,
    daemon_process,
    pod_census,
    running_daemon,
)
from tests.support.flink import report_figures
from tests.support.serviceproxy import ServiceProxy
from tests.support.waiting import eventually, within

pytestmark = pytest.mark.integration

ELECTION = "high-availability.kubernetes.leader-election"
# Short for a test, yet with room for a busy 2-core CI machine: a leader that is merely slow
# must not lose the Lease (the renewals and takeovers under test are real, only shorter).
LEASE_DURATION = 8.0
RENEW_DEADLINE = 6.0
RETRY_PERIOD = 2.0
SLOTS_PER_TM = 4  # daemon_overrides' taskmanager.numberOfTaskSlots


@dataclass
class Replica:
    name: str
    url: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def backend(self) -> str:
        return self.url.removeprefix("http://")

    def alive(self) -> bool:
        return self.process.returncode is None

    def events(self, name: str) -> list[dict[str, Any]]:
        """The daemon's JSON log lines with ``event == name``."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == name:
                found.append(entry)
        return found


@dataclass
class HaCluster:
    cluster_id: str
    namespace: str
    replicas: list[Replica]
    service: ServiceProxy
    http: aiohttp.ClientSession
    census: PodCensus
    core: client.CoreV1Api
    coordination: client.CoordinationV1Api

    async def leader_of(self, replica: Replica) -> dict[str, Any] | None:
        """What /readyz of ``replica`` says about leadership; None when it does not answer."""
        try:
            async with self.http.get(
                f"{replica.url}/readyz", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                if resp.status != 200:
                    return None
                leader: dict[str, Any] = (await resp.json())["leader"]
                return leader
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def leaders(self, among: list[Replica] | None = None) -> list[Replica]:
        candidates = [r for r in (among or self.replicas) if r.alive()]
        answers = await asyncio.gather(*(self.leader_of(r) for r in candidates))
        return [r for r, a in zip(candidates, answers, strict=True) if a and a["is_leader"]]

    async def the_leader(self, among: list[Replica] | None = None) -> Replica:
        found: list[Replica] = []

        async def one() -> bool:
            found[:] = await self.leaders(among)
            return len(found) == 1

        await eventually(one, timeout=30, interval=0.05, what="exactly one leader")
        return found[0]

    async def leader_gauges(self) -> dict[str, float]:
        """``rmd_leader`` of every live replica, by name."""
        gauges = {}
        for replica in self.replicas:
            if replica.alive():
                async with self.http.get(f"{replica.url}/metrics") as resp:
                    text = await resp.text()
                (line,) = [x for x in text.splitlines() if x.startswith("rmd_leader ")]
                gauges[replica.name] = float(line.split()[1])
        return gauges

    async def lease(self) -> Any:
        return await self.coordination.read_namespaced_lease(
            f"{self.cluster_id}-rmd-leader", self.namespace, _request_timeout=REQUEST_TIMEOUT
        )

    async def live_pods(self) -> set[str]:
        listed = await self.core.list_namespaced_pod(
            self.namespace,
            label_selector=f"{TM_SELECTOR},app={self.cluster_id}",
            _request_timeout=REQUEST_TIMEOUT,
        )
        return {p.metadata.name for p in listed.items if not p.metadata.deletion_timestamp}

    async def pod_managers(self, name: str) -> set[str]:
        """Who wrote the pod, by the API server's record (``metadata.managedFields``), leaving
        out the kubelet stand-in's status writes."""
        pod = await self.core.read_namespaced_pod(
            name, self.namespace, _request_timeout=REQUEST_TIMEOUT
        )
        return {
            entry.manager
            for entry in pod.metadata.managed_fields or []
            if entry.manager.startswith("rmd/")
        }

    async def state_writes(self) -> dict[str, float]:
        """The state ConfigMap's field managers and when each last wrote (epoch seconds)."""
        state = await self.core.read_namespaced_config_map(
            state_config_map_name(self.cluster_id),
            self.namespace,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return {
            entry.manager: entry.time.timestamp() for entry in state.metadata.managed_fields or []
        }

    async def registered(self, leader: Replica) -> set[str]:
        async with self.http.get(f"{leader.url}/v1/taskmanagers") as resp:
            if resp.status != 200:
                return set()
            body = await resp.json()
        return {t["taskmanager_id"] for t in body["taskmanagers"] if t["state"] == "registered"}


@asynccontextmanager
async def ha_cluster(
    *,
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    replicas: int,
    extra: dict[str, str] | None = None,
) -> AsyncIterator[HaCluster]:
    cluster_id = f"flink-ha{replicas}"
    ports = [free_port() for _ in range(replicas)]
    async with AsyncExitStack() as stack:
        service = await stack.enter_async_context(
            ServiceProxy([f"127.0.0.1:{port}" for port in ports])
        )
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        )
        census = await stack.enter_async_context(
            pod_census(kube_api, namespace=namespace, cluster_id=cluster_id)
        )
        started = []
        for number, port in enumerate(ports, start=1):
            conf_dir = Path(tempfile.mkdtemp(prefix="rmd-conf-", dir=tmp_path))
            keys = {
                "high-availability.type": "kubernetes",
                "kubernetes.jobmanager.replicas": str(replicas),
                f"{ELECTION}.lease-duration": f"{LEASE_DURATION:g} s",
                f"{ELECTION}.renew-deadline": f"{RENEW_DEADLINE:g} s",
                f"{ELECTION}.retry-period": f"{RETRY_PERIOD:g} s",
                "rmd.taskmanager.resourcemanager-url": service.url,
                **(extra or {}),
            }
            argv = ["--conf-dir", str(conf_dir), "--kubeconfig", str(dev_cluster.kubeconfig)]
            for item in daemon_overrides(
                cluster_id=cluster_id, namespace=namespace, port=port, extra=keys
            ):
                argv += ["-D", item]
            log = tmp_path / f"daemon-{number}.log"
            process = await stack.enter_async_context(daemon_process(argv=argv, log=log))
            started.append(Replica(f"daemon-{number}", f"http://127.0.0.1:{port}", process, log))
        cluster = HaCluster(
            cluster_id=cluster_id,
            namespace=namespace,
            replicas=started,
            service=service,
            http=http,
            census=census,
            core=client.CoreV1Api(kube_api),
            coordination=client.CoordinationV1Api(kube_api),
        )
        try:
            for replica in started:  # every standby warm (its pod view synced)
                await eventually(
                    functools.partial(_answers, cluster, replica),
                    timeout=30,
                    what=f"{replica.name} ready",
                )
            yield cluster
        finally:
            for replica in started:
                if replica.alive():
                    replica.process.send_signal(signal.SIGCONT)
            await cluster.core.delete_collection_namespaced_pod(
                namespace,
                label_selector=f"{TM_SELECTOR},app={cluster_id}",
                _request_timeout=REQUEST_TIMEOUT,
            )


HaFactory = Callable[..., AbstractAsyncContextManager[HaCluster]]


@pytest.fixture
def start_ha(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> HaFactory:
    """``start_ha(replicas=n)``: n daemons in this test's namespace (see :func:`ha_cluster`)."""
    return functools.partial(
        ha_cluster,
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("replicas", [2, 3])
async def test_one_leader_standbys_redirect_and_a_killed_leader_is_replaced(
    start_ha: HaFactory, replicas: int
) -> None:
    async with start_ha(replicas=replicas) as ha:
        ha.census.limit = lambda: 2  # 8 slots = 2 TaskManagers, never more pods
        leader = await ha.the_leader()
        lease = await ha.lease()
        assert leader.events("leader_elected")[0]["identity"] == lease.spec.holder_identity
        assert lease.spec.lease_duration_seconds == LEASE_DURATION
        assert lease.spec.renew_time is not None  # MicroTime the client could parse
        assert lease.metadata.annotations["rmd.apache.org/leader-url"] == leader.url
        standbys = [r for r in ha.replicas if r is not leader]
        assert await ha.leader_gauges() == {
            r.name: 1.0 if r is leader else 0.0 for r in ha.replicas
        }

        # A standby answers writes with 503 and the leader's address, once it has read the
        # Lease with that address in it (every retry period; the leader adds it as its HTTP
        # server listens).
        for standby in standbys:
            await eventually(
                functools.partial(_names_the_leader, ha, standby, leader.url),
                timeout=10,
                what=f"{standby.name} names the leader",
            )
        async with ha.http.put(
            f"{standbys[0].url}/v1/jobs/job-a/requirements", json={"slots": 8}
        ) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 503
            assert body["leader_url"] == leader.url
        # The JobMaster client, pointed at a standby, follows it to the leader.
        async with RmdClient(standbys[-1].url) as rmd:
            await rmd.declare("job-a", 8)
            assert rmd.target_url == leader.url
            assert (await rmd.wait_fulfilled("job-a", timeout=60)).fulfilled
        pods = await ha.live_pods()
        assert len(pods) == 2
        assert await ha.registered(leader) == pods

        # SIGKILL the leader: a standby takes over within the lease duration (+ a retry).
        ha.service.remove(leader.backend)
        leader.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await leader.process.wait()
        new_leader = await ha.the_leader(standbys)
        takeover = time.monotonic() - killed_at
        # Nobody declares again: the new leader restored job-a's demand from the state
        # ConfigMap, and its slots come back on the same pods once their agents re-register
        # with it (their calls to the dead leader fail, the Service sends them to a standby,
        # which names the new leader).
        async with RmdClient(new_leader.url) as rmd:
            view = await rmd.wait_fulfilled("job-a", timeout=60)
            slots_back = time.monotonic() - killed_at
            assert view.fulfilled, view.unfulfilled_reason
            assert view.slots_required == view.slots_allocated == 8
            assert {slot.taskmanager_id for slot in view.slots} == pods
        assert await ha.registered(new_leader) == pods
        assert ha.census.seen == pods  # adopted, not duplicated
        assert ha.census.violations == []
        lease = await ha.lease()
        assert lease.spec.lease_transitions == 1
        assert lease.metadata.annotations["rmd.apache.org/leader-url"] == new_leader.url
        report_figures(
            f"HA: SIGKILL of the leader ({replicas} replicas)",
            {
                "lease duration": LEASE_DURATION,
                "retry period": RETRY_PERIOD,
                "kill -> new leader": takeover,
                "kill -> all 8 slots of job-a back (no re-declaration)": slots_back,
            },
        )
        # A standby notices at its next retry after the lease ran out (slack for a busy box).
        assert takeover <= LEASE_DURATION + RETRY_PERIOD + 3.0, takeover
        if replicas == 2:
            return
        # A graceful stop hands the Lease back: the last standby leads at once.
        last = next(r for r in standbys if r is not new_leader)
        ha.service.remove(new_leader.backend)
        new_leader.process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert await within(new_leader.process.wait(), seconds=30, what="SIGTERM") == 0
        assert await ha.the_leader([last]) is last
        handover = time.monotonic() - stopped_at
        assert handover < LEASE_DURATION, handover  # released, not expired
        assert ha.census.seen == pods


async def test_a_frozen_leader_that_lost_the_lease_writes_nothing_when_it_wakes(
    start_ha: HaFactory,
) -> None:
    async with start_ha(replicas=2) as ha:
        ha.census.limit = lambda: 2  # 8 slots = 2 TaskManagers
        old = await ha.the_leader()
        (other,) = [r for r in ha.replicas if r is not old]
        async with RmdClient(ha.service.url) as rmd:
            await rmd.declare("job-a", 8)
            assert (await rmd.wait_fulfilled("job-a", timeout=60)).fulfilled
        first = await ha.live_pods()
        assert first == {f"{ha.cluster_id}-taskmanager-1-1", f"{ha.cluster_id}-taskmanager-1-2"}
        # Every write names its daemon (fieldManager): the API server says who made the pods.
        old_manager = old.events("daemon_started")[0]["field_manager"]
        new_manager = other.events("daemon_started")[0]["field_manager"]
        assert old_manager != new_manager
        assert old_manager.removeprefix("rmd/") == old.events("leader_elected")[0]["identity"]
        assert {name: await ha.pod_managers(name) for name in first} == {
            name: {old_manager} for name in first
        }
        assert old_manager in await ha.state_writes()  # it stored job-a's demand

        # Freeze the leader past its lease: the other takes over.
        ha.service.remove(old.backend)  # its readiness probe would fail
        old.process.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        frozen_wall = time.time()
        assert await ha.the_leader([other]) is other
        takeover = time.monotonic() - frozen_at
        async with RmdClient(ha.service.url) as rmd:
            # The JobMaster declares the same again as soon as the new leader answers, before
            # the agents have re-registered with it: the adopted pods cover it, no new pod.
            await rmd.declare("job-a", 8)
            back_at_declare = len(await ha.registered(other))
            assert (await rmd.wait_fulfilled("job-a", timeout=60)).fulfilled
            assert ha.census.seen == first
            assert await ha.registered(other) == first
            # Both pods are deleted from outside (kubectl delete): the new leader replaces
            # them (attempt 2). The frozen leader still believes in its two pods and knows
            # nothing of the new ones: woken, it sees its pods gone (it would create
            # replacements) and two pods it never made (it would delete them).
            for name in first:
                await ha.core.delete_namespaced_pod(
                    name, ha.namespace, grace_period_seconds=0, _request_timeout=REQUEST_TIMEOUT
                )
            await eventually(
                functools.partial(_replaced, ha, first),
                timeout=60,
                what="the new leader replaced the deleted pods",
            )
            assert (await rmd.wait_fulfilled("job-a", timeout=60)).fulfilled
        second = await ha.live_pods()
        assert second == {f"{ha.cluster_id}-taskmanager-2-1", f"{ha.cluster_id}-taskmanager-2-2"}
        created_before = len(old.events("pod_created"))
        deleted_before = len(old.events("pod_deleted"))
        seen_before = set(ha.census.seen)

        old.process.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        code = await within(old.process.wait(), seconds=30, what="the deposed leader to exit")
        exited_after = time.monotonic() - resumed_at
        assert code == 1, old.log.read_text()[-3000:]
        assert old.events("leadership_lost"), old.log.read_text()[-3000:]
        # It wrote nothing: no pod created or deleted by it, and the API server agrees — no
        # new pod, the new leader's pods untouched and still serving the job.
        assert len(old.events("pod_created")) == created_before
        assert len(old.events("pod_deleted")) == deleted_before
        assert ha.census.seen == seen_before
        assert await ha.live_pods() == second
        assert ha.census.violations == []
        # The API server agrees: the new leader's pods were written (created, labelled) by
        # it alone, and nothing in the state ConfigMap is the old leader's after it froze
        # (managedFields' times are whole seconds, cut down).
        assert {name: await ha.pod_managers(name) for name in second} == {
            name: {new_manager} for name in second
        }
        state = await ha.state_writes()
        assert state.get(old_manager, frozen_wall) <= frozen_wall, state
        assert state[new_manager] >= frozen_wall - 1, state
        assert await ha.the_leader() is other
        async with RmdClient(ha.service.url) as rmd:
            view = await rmd.job("job-a")
            assert view.fulfilled
            assert {slot.taskmanager_id for slot in view.slots} == second
        refused = [
            e
            for e in old.events("pod_create_failed") + old.events("pod_delete_failed")
            if "NotLeader" in json.dumps(e)
        ]
        report_figures(
            f"HA: SIGSTOP of the leader past its lease (2 replicas; after SIGCONT it attempted "
            f"{len(refused)} pod writes, all refused by its own Lease check; "
            f"{back_at_declare} of 2 agents were back when the JobMaster re-declared)",
            {
                "lease duration": LEASE_DURATION,
                "stop -> new leader": takeover,
                "SIGCONT -> deposed leader exited": exited_after,
            },
        )


async def _replaced(ha: HaCluster, deleted: set[str]) -> bool:
    live = await ha.live_pods()
    return len(live) == 2 and not live & deleted


async def _names_the_leader(cluster: HaCluster, replica: Replica, url: str) -> bool:
    answer = await cluster.leader_of(replica)
    return answer is not None and answer["leader_url"] == url


async def test_only_the_leader_publishes_the_flink_config(start_ha: HaFactory) -> None:
    """Each replica's configuration differs (its own rmd.rest.port): the ConfigMap the pods
    mount is the leader's, a standby writes nothing to it, and a standby that takes over
    publishes its own."""
    extra = {"rmd.taskmanager.supervise-flink": "true", "jobmanager.rpc.address": "10.9.8.7"}
    async with start_ha(replicas=2, extra=extra) as ha:
        name = f"flink-config-{ha.cluster_id}"

        async def published() -> tuple[set[str], str]:
            stored = await ha.core.read_namespaced_config_map(
                name, ha.namespace, _request_timeout=REQUEST_TIMEOUT
            )
            managers = {entry.manager for entry in stored.metadata.managed_fields or []}
            port = parse_config_yaml(stored.data["config.yaml"])["rmd.rest.port"]
            return managers, str(port)

        def wrote(replica: Replica) -> tuple[set[str], str]:
            manager = replica.events("daemon_started")[0]["field_manager"]
            return {manager}, replica.url.rsplit(":", 1)[1]

        leader = await ha.the_leader()
        [standby] = [r for r in ha.replicas if r is not leader]
        await eventually(
            lambda: _same(published(), wrote(leader)), what="the leader's flink-config only"
        )
        assert standby.events("flink_config_published") == []

        leader.process.send_signal(signal.SIGKILL)
        assert await ha.the_leader(among=[standby]) is standby
        await eventually(
            lambda: _same(
                published(), ({*wrote(leader)[0], *wrote(standby)[0]}, wrote(standby)[1])
            ),
            what="the new leader's flink-config",
        )
        assert len(standby.events("flink_config_published")) == 1


async def _same(values: Awaitable[tuple[set[str], str]], expected: tuple[set[str], str]) -> bool:
    return await values == expected


async def _answers(cluster: HaCluster, replica: Replica) -> bool:
    return await cluster.leader_of(replica) is not None


async def _equal(values: Any, expected: set[str]) -> bool:
    return set(await values) == expected


async def test_the_shipped_role_is_enough_for_the_election(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    await apply_shipped_rbac(dev_cluster, namespace=namespace)
    kubeconfig = await service_account_kubeconfig(
        client.CoreV1Api(kube_api),
        dev_cluster,
        namespace=namespace,
        account="rmd",
        path=tmp_path / "rmd.kubeconfig",
    )
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        kubeconfig=kubeconfig,
        extra={"high-availability.type": "kubernetes"},
    ) as daemon:
        async with RmdClient(daemon.url, max_attempts=20) as rmd:  # 503 until it leads
            await rmd.declare("job-r", 4)
            assert (await rmd.wait_fulfilled("job-r", timeout=60)).fulfilled
        metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
        assert "rmd_leader 1.0" in metrics
        assert 'rmd_leader_transitions_total{change="acquired"} 1.0' in metrics
        assert 'rmd_kubernetes_api_errors_total{code="403"}' not in metrics
        lease = await client.CoordinationV1Api(kube_api).read_namespaced_lease(
            f"{daemon.cluster_id}-rmd-leader", namespace, _request_timeout=REQUEST_TIMEOUT
        )
        assert lease.spec.holder_identity
