"""The fault matrix's harness: one steady workload, one set of invariants, one record per row.

Every row (tests/integration/test_fault_matrix.py) runs the real ``rmd daemon`` process on a
real control plane with jobs declared and TaskManager agents registered and heartbeating,
injects one fault, raises the demand while the fault lasts, ends the fault and then checks,
through the independent pod watcher (:class:`PodCensus`, its own watch on its own
connection), that

- pods alive never exceeded the demand (+ redundant TaskManagers: none here);
- at the end pods == the demand, every one registered with the daemon, every job fulfilled,
  no pod the daemon does not know of (nothing leaked), and the daemon process still runs;
- no TaskManager was lost (none of these faults touches one: a job keeps its slots);

and records how long the cluster took to converge after the fault ended. With
``RMD_RELIABILITY_RESULTS=<file>`` each row is appended to that file as one JSON line, from
which ``python -m tests.support.reliability_doc`` writes docs/RELIABILITY.md (``make
reliability``). ``RMD_RELIABILITY_PROFILE=full`` runs the long faults (30 s outages) instead
of the CI profile's short ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

from kubernetes_asyncio import client

from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    _api_client,
    _devcluster,
    _load_info,
    manifest,
    wait_for_service_account,
)
from tests.integration.daemon_harness import PodCensus, RunningDaemon, pod_census, running_daemon
from tests.support.waiting import eventually

SLOTS_PER_TASKMANAGER = 4  # the harness' taskmanager.numberOfTaskSlots
PROFILE = os.environ.get("RMD_RELIABILITY_PROFILE", "ci")
RESULTS = os.environ.get("RMD_RELIABILITY_RESULTS")
CONVERGE_TIMEOUT = 120.0


def fault_seconds(*, ci: float, full: float) -> float:
    """How long a fault lasts in this profile."""
    return full if PROFILE == "full" else ci


@dataclass(frozen=True)
class MatrixRow:
    fault: str
    what_happened: str
    fault_seconds: float
    converge_seconds: float  # from the end of the fault to every invariant holding
    demand_pods: int
    most_pods: int
    pods_leaked: int
    taskmanagers_lost: int
    invariants_held: bool
    profile: str = PROFILE


def record(row: MatrixRow) -> None:
    """Print the row (the figure to quote) and append it to $RMD_RELIABILITY_RESULTS."""
    print(f"\nfault matrix: {json.dumps(asdict(row))}")
    if RESULTS:
        with Path(RESULTS).open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(asdict(row)) + "\n")


@dataclass
class Workload:
    """Jobs and their slot demand; the census' limit follows the demand's pods."""

    daemon: RunningDaemon
    census: PodCensus
    demand: dict[str, int]

    @property
    def demand_pods(self) -> int:
        return -(-sum(self.demand.values()) // SLOTS_PER_TASKMANAGER)

    async def declare(self, job_id: str, slots: int) -> None:
        """Raise (never lower: the limit would lag the release) a job's demand."""
        assert slots >= self.demand.get(job_id, 0)
        self.demand[job_id] = slots
        # During a fault the API server may take no state write: 503 not-stored, in effect.
        await self.daemon.put_requirement(job_id, slots, not_stored_ok=True)

    async def start(self) -> None:
        self.census.limit = lambda: self.demand_pods
        for job_id, slots in dict(self.demand).items():
            await self.daemon.put_requirement(job_id, slots)
        await self.converged(timeout=CONVERGE_TIMEOUT)

    async def converged(self, *, timeout: float = CONVERGE_TIMEOUT) -> float:
        """Wait until every invariant of the end state holds; the seconds it took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        problems: list[str] = []

        async def holds() -> bool:
            problems[:] = await self.end_state_problems()
            return not problems

        try:
            await eventually(holds, timeout=timeout, interval=0.25, what="convergence")
        except AssertionError:
            raise AssertionError(f"not converged after {timeout} s: {problems}") from None
        return loop.time() - started

    async def end_state_problems(self) -> list[str]:
        problems = []
        for job_id, slots in self.demand.items():
            view = await self.daemon.get_json(f"/v1/jobs/{job_id}")
            if view["slots_allocated"] != slots:
                problems.append(f"{job_id}: {view['slots_allocated']}/{slots} slots")
        taskmanagers = await self.daemon.taskmanagers()
        registered = {tm["taskmanager_id"] for tm in taskmanagers if tm["state"] == "registered"}
        known = {tm["taskmanager_id"] for tm in taskmanagers}
        live = await self.daemon.live_pod_names()
        if len(live) != self.demand_pods:
            problems.append(f"{len(live)} pods for a demand of {self.demand_pods}")
        if registered != live:
            problems.append(f"registered {sorted(registered)} != pods {sorted(live)}")
        if self.census.alive != live:
            problems.append(f"the census sees {sorted(self.census.alive)}, the API {sorted(live)}")
        if leaked := live - known:
            problems.append(f"pods the daemon does not know: {sorted(leaked)}")
        process = self.daemon.process
        if process is not None and process.returncode is not None:
            problems.append(f"the daemon exited with {process.returncode}")
        return problems

    async def leaked(self) -> int:
        known = {tm["taskmanager_id"] for tm in await self.daemon.taskmanagers()}
        return len(await self.daemon.live_pod_names() - known)

    async def row(
        self,
        *,
        fault: str,
        what_happened: str,
        fault_seconds: float,
        converge_seconds: float,
        taskmanagers_die: bool = False,
    ) -> MatrixRow:
        """The row of this fault, after the end state held; asserts the invariants.
        ``taskmanagers_die``: the fault itself makes TaskManagers lost (their agents cut off
        past the heartbeat timeout), so losing them is right."""
        leaked = await self.leaked()
        lost = int(await self.daemon.metric("rmd_taskmanagers_lost_total"))
        row = MatrixRow(
            fault=fault,
            what_happened=what_happened,
            fault_seconds=round(fault_seconds, 1),
            converge_seconds=round(converge_seconds, 1),
            demand_pods=self.demand_pods,
            most_pods=self.census.max_alive,
            pods_leaked=leaked,
            taskmanagers_lost=lost,
            invariants_held=not self.census.violations
            and leaked == 0
            and (lost == 0 or taskmanagers_die),
        )
        record(row)
        assert self.census.violations == [], self.census.violations
        assert leaked == 0
        if not taskmanagers_die:
            assert lost == 0, "no fault here kills a TaskManager: none may be lost"
        return row


@contextlib.contextmanager
def dedicated_cluster(*apiserver_args: str, nodes: int = 2) -> Iterator[DevClusterInfo]:
    """A control plane of its own (``rmd dev-cluster up``), for faults that stop or restart
    its components; ``down`` at the end."""
    directory = Path(tempfile.mkdtemp(prefix="rmd-fault-cluster-"))
    args = ["up", "--dir", str(directory), "--nodes", str(nodes)]
    args += [f"--apiserver-arg={arg}" for arg in apiserver_args]
    up = _devcluster(*args)
    if up.returncode != 0:
        _devcluster("down", "--dir", str(directory))
        raise AssertionError(f"rmd dev-cluster up failed:\n{up.stderr}")
    try:
        yield _load_info(directory)
    finally:
        _devcluster("down", "--dir", str(directory))


@contextlib.asynccontextmanager
async def cluster_namespace(info: DevClusterInfo) -> AsyncIterator[tuple[client.ApiClient, str]]:
    """An admin ApiClient of ``info``'s cluster and a fresh namespace in it."""
    api = await _api_client(info.kubeconfig)
    async with api:
        core = client.CoreV1Api(api)
        name = f"f-{secrets.token_hex(4)}"
        await core.create_namespace(
            body=manifest({"metadata": {"name": name}}), _request_timeout=REQUEST_TIMEOUT
        )
        await wait_for_service_account(core, namespace=name)
        yield api, name


STEADY = {"job-a": 4, "job-b": 4}  # two TaskManagers of 4 slots


@contextlib.asynccontextmanager
async def steady_workload(
    *,
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    kubeconfig: Path | None = None,
    extra: Mapping[str, str] | None = None,
    token: str | None = None,
    port: int | None = None,
) -> AsyncIterator[Workload]:
    """The ``rmd daemon`` process (as ``kubeconfig``'s identity, default admin; ``extra``
    configuration; ``token`` on its /v1 calls) with the steady workload running and
    converged, watched by a census of its own."""
    async with (
        running_daemon(
            dev_cluster=dev_cluster,
            kube_api=kube_api,
            namespace=namespace,
            kubeconfig=kubeconfig,
            as_process=True,
            extra=extra,
            token=token,
            port=port,
        ) as daemon,
        pod_census(kube_api, namespace=namespace, cluster_id=daemon.cluster_id) as census,
    ):
        workload = Workload(daemon, census, dict(STEADY))
        await workload.start()
        yield workload


@contextlib.asynccontextmanager
async def steady_workload_on(
    cluster: DevClusterInfo, *, kubeconfig: Path | None = None
) -> AsyncIterator[Workload]:
    """:func:`steady_workload` in a fresh namespace of a dedicated cluster."""
    async with (
        cluster_namespace(cluster) as (api, namespace),
        steady_workload(
            dev_cluster=cluster, kube_api=api, namespace=namespace, kubeconfig=kubeconfig
        ) as workload,
    ):
        yield workload


# ---------------------------------------------------------------------------- one row


@dataclass(frozen=True)
class Injected:
    """What one fault did, as its row tells it. ``then``: checked once the cluster converged."""

    fault: str
    what_happened: str  # the daemon's own counts are appended
    fault_seconds: float
    taskmanagers_die: bool = False
    then: Callable[[], Awaitable[None]] | None = None


Fault = Callable[[Workload], Awaitable[Injected]]


async def counts(daemon: RunningDaemon) -> str:
    """What the daemon did, from its own metrics."""
    created = await daemon.metric("rmd_pods_created_total")
    restarts = await daemon.metric("rmd_watch_restarts_total")
    errors = await daemon.metric("rmd_kubernetes_api_errors_total")
    failures = await daemon.metric("rmd_start_failures_total")
    lost = await daemon.metric("rmd_taskmanagers_lost_total")
    return (
        f"{created:.0f} pods created, {errors:.0f} failed API calls, {restarts:.0f} watch "
        f"restarts, {failures:.0f} start failures, {lost:.0f} TaskManagers lost"
    )


async def fault_row(workload: AbstractAsyncContextManager[Workload], fault: Fault) -> MatrixRow:
    """One row of the matrix: the steady ``workload`` up and converged, ``fault`` injected
    (and ended: the demand raised while it lasts), then the time to converge and the row,
    with every invariant asserted."""
    async with workload as running:
        injected = await fault(running)
        converge = await running.converged()
        if injected.then is not None:
            await injected.then()
        done = await counts(running.daemon)
        return await running.row(
            fault=injected.fault,
            what_happened="; ".join(part for part in (injected.what_happened, done) if part),
            fault_seconds=injected.fault_seconds,
            converge_seconds=converge,
            taskmanagers_die=injected.taskmanagers_die,
        )
