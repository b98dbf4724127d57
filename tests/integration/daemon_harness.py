"""Run the real daemon against the real control plane, and watch what it does to pods.

The daemon runs in the test's event loop through :func:`rmd.daemon.serve` — the same code
``rmd daemon`` runs — or, with ``as_process=True``, as the ``rmd daemon`` process itself
(for faults that need a process: SIGSTOP, a restart); either way it is driven only over
HTTP, as a JobMaster and the TaskManager agents would. Its TaskManager pods run the real
agent as OS processes under the node emulator (``emulator.rmd.dev/run: process``).
:func:`daemon_process` runs ``rmd daemon`` as an OS process with arguments of the test's
own, for tests that kill it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch
from prometheus_client.parser import text_string_to_metric_families

from rmd.daemon import load_daemon_config, serve
from rmd_dev.cluster import free_port
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo
from tests.support.waiting import eventually, within

TM_SELECTOR = "type=flink-native-kubernetes,component=taskmanager"


def daemon_overrides(
    *,
    cluster_id: str,
    namespace: str,
    port: int,
    address: str = "127.0.0.1",
    extra: Mapping[str, str] | None = None,
) -> list[str]:
    values = {
        "kubernetes.cluster-id": cluster_id,
        "kubernetes.namespace": namespace,
        "kubernetes.container.image": "rmd-taskmanager:dev",
        "taskmanager.numberOfTaskSlots": "4",
        "taskmanager.memory.process.size": "256m",
        "kubernetes.taskmanager.cpu": "0.1",
        "rmd.rest.address": address,
        "rmd.rest.port": str(port),
        "rmd.taskmanager.resourcemanager-url": f"http://{address}:{port}",
        "rmd.taskmanager.agent-command": f"{sys.executable};-m;rmd;taskmanager",
        "rmd.taskmanager.supervise-flink": "false",
        "kubernetes.taskmanager.annotations": "emulator.rmd.dev/run:process",
        "heartbeat.interval": "1 s",
        "heartbeat.timeout": "10 s",
        "rmd.kubernetes.resync-interval": "30 s",
        # A restarted daemon waits this long for its adopted pods to register again before
        # it creates pods for the demand they may cover (Flink's default 0 s never waits).
        "resourcemanager.previous-worker.recovery.timeout": "60 s",
        **(extra or {}),
    }
    return [f"{key}={value}" for key, value in values.items()]


@dataclass
class RunningDaemon:
    url: str
    cluster_id: str
    namespace: str
    http: aiohttp.ClientSession
    core: client.CoreV1Api
    # The ``rmd daemon`` process (``as_process=True``), its log file; None when in-process.
    process: asyncio.subprocess.Process | None = None
    log_path: Path | None = None
    # The bearer token sent on /v1 calls (with rmd.auth.token-file); may change mid-test.
    token: str | None = None

    def _auth(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    async def metric(self, name: str, **labels: str) -> float:
        """A sample of /metrics (summed over the label values not given); 0 when absent."""
        async with self.http.get(f"{self.url}/metrics") as resp:
            text = await resp.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the daemon process (SIGSTOP / SIGCONT: stall and resume it)."""
        assert self.process is not None, "signals need running_daemon(as_process=True)"
        os.kill(self.process.pid, signum)

    async def put_requirement(
        self, job_id: str, slots: int, *, not_stored_ok: bool = False
    ) -> dict[str, Any]:
        """PUT the requirement; ``not_stored_ok``: a 503 ``not-stored`` (in effect, but the
        API server took no state write within 10 s: a fault) is an answer too."""
        async with self.http.put(
            f"{self.url}/v1/jobs/{job_id}/requirements", json={"slots": slots}, headers=self._auth()
        ) as resp:
            body: dict[str, Any] = await resp.json(content_type=None)
            not_stored = resp.status == 503 and body.get("type") == "urn:rmd:problem:not-stored"
            assert resp.status == 200 or (not_stored_ok and not_stored), body
            return body

    async def get_json(self, path: str, *, expect: int = 200) -> Any:
        async with self.http.get(f"{self.url}{path}", headers=self._auth()) as resp:
            assert resp.status == expect, f"{path}: {resp.status} {await resp.text()}"
            return await resp.json(content_type=None)

    async def metrics(self) -> str:
        """The text of ``/metrics``."""
        async with self.http.get(f"{self.url}/metrics") as resp:
            assert resp.status == 200, await resp.text()
            return await resp.text()

    async def wait_fulfilled(self, job_id: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Long-poll the job until it is fulfilled (the API's own ?wait=)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            view: dict[str, Any] = await self.get_json(
                f"/v1/jobs/{job_id}?wait={max(0.0, min(remaining, 30.0)):.1f}"
            )
            if view["fulfilled"]:
                return view
            if remaining <= 0:
                raise AssertionError(f"job {job_id} not fulfilled after {timeout}s: {view}")

    async def pods(self) -> list[Any]:
        listed = await self.core.list_namespaced_pod(
            self.namespace,
            label_selector=f"{TM_SELECTOR},app={self.cluster_id}",
            _request_timeout=REQUEST_TIMEOUT,
        )
        return list(listed.items)

    async def live_pod_names(self) -> set[str]:
        return {p.metadata.name for p in await self.pods() if not p.metadata.deletion_timestamp}

    async def taskmanagers(self) -> list[dict[str, Any]]:
        body = await self.get_json("/v1/taskmanagers")
        tms: list[dict[str, Any]] = body["taskmanagers"]
        return tms


def daemon_argv(
    *,
    dev_cluster: DevClusterInfo,
    conf_dir: Path,
    cluster_id: str,
    namespace: str,
    port: int,
    extra: Mapping[str, str] | None = None,
) -> list[str]:
    """``rmd daemon`` arguments: an empty conf dir, the admin kubeconfig, the overrides."""
    argv = ["--conf-dir", str(conf_dir), "--kubeconfig", str(dev_cluster.kubeconfig)]
    for item in daemon_overrides(
        cluster_id=cluster_id, namespace=namespace, port=port, extra=extra
    ):
        argv += ["-D", item]
    return argv


@contextlib.asynccontextmanager
async def daemon_process(
    *, argv: list[str], log: Path, tree: Path | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``rmd daemon`` as an OS process (output appended to ``log``); killed if still running.
    ``tree``: a directory holding another ``rmd`` package (e.g. an older commit's), run
    instead of this checkout's (``python -m`` puts the working directory first)."""
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rmd", "daemon", *argv, stdout=sink, stderr=sink, cwd=tree
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def agent_pid(pod_name: str) -> int | None:
    """The PID of the agent process the node emulator runs for ``pod_name``."""
    wanted = f"RMD_POD_NAME={pod_name}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if wanted in environ and b"taskmanager" in cmdline:
            return int(entry.name)
    return None


@dataclass
class DemandHistory:
    """The slot demand over time, as a JobMaster sent it: for :attr:`PodCensus.creation_limit`.

    A declaration is in force from when it is sent (the daemon may act on it before it
    answers) until the next one for the job is answered."""

    slots_per_taskmanager: int
    redundant: int = 0
    jobs: dict[str, int] = field(default_factory=dict)
    # (monotonic time, total slots in force at most from then on)
    totals: list[tuple[float, int]] = field(default_factory=lambda: [(0.0, 0)])

    def sending(self, job_id: str, slots: int) -> None:
        upper = {**self.jobs, job_id: max(slots, self.jobs.get(job_id, 0))}
        self.totals.append((asyncio.get_running_loop().time(), sum(upper.values())))

    def answered(self, job_id: str, slots: int) -> None:
        self.jobs[job_id] = slots
        self.totals.append((asyncio.get_running_loop().time(), sum(self.jobs.values())))

    def pods_needed(self, *, within: float) -> int:
        """TaskManagers for the most slots in force during the last ``within`` seconds."""
        since = asyncio.get_running_loop().time() - within
        recent = [total for at, total in self.totals if at >= since]
        before = [total for at, total in self.totals if at < since][-1:]
        most = max([*before, *recent])
        return math.ceil(most / self.slots_per_taskmanager) + self.redundant


@dataclass
class PodCensus:
    """An independent watcher of the TaskManager pods: records every pod ever seen and the
    most pods alive (not being deleted) at any one time.

    ``limit``: checked on every event, pods alive must not exceed it. ``creation_limit``:
    checked whenever a pod appears, for a limit that holds when pods are created but not
    while idle pods wait for their idle timeout (e.g. :meth:`DemandHistory.pods_needed`)."""

    seen: set[str] = field(default_factory=set)
    alive: set[str] = field(default_factory=set)
    max_alive: int = 0
    events: list[tuple[float, str, str]] = field(default_factory=list)
    left_at: dict[str, float] = field(default_factory=dict)  # when a pod stopped being alive
    violations: list[str] = field(default_factory=list)
    limit: Callable[[], int] | None = None
    creation_limit: Callable[[], int] | None = None
    blind: int = 0  # times the census lost the API server and had to list again

    def check(self, _now: float) -> None:
        """Record the most pods alive, and a violation when they exceed ``limit()``."""
        self.max_alive = max(self.max_alive, len(self.alive))
        if self.limit is not None and len(self.alive) > self.limit():
            self.violations.append(
                f"{len(self.alive)} pods alive > limit {self.limit()}: {sorted(self.alive)}"
            )


async def _census(api: client.ApiClient, namespace: str, selector: str, census: PodCensus) -> None:
    """List, then watch from the list's resourceVersion; relist after a 410 and, when the API
    server cannot be reached (a fault under test), once it answers again."""
    core = client.CoreV1Api(api)
    loop = asyncio.get_running_loop()
    rv: str | None = None
    while True:
        try:
            if rv is None:
                listed = await core.list_namespaced_pod(
                    namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
                )
                rv = listed.metadata.resource_version
                census.alive = {
                    p.metadata.name for p in listed.items if not p.metadata.deletion_timestamp
                }
                census.seen |= census.alive
                census.check(loop.time())
            async with watch.Watch() as w:
                async for event in w.stream(
                    core.list_namespaced_pod,
                    namespace,
                    label_selector=selector,
                    resource_version=rv,
                    timeout_seconds=60,
                    _request_timeout=(5, 90),
                ):
                    pod = event["object"]
                    name = pod.metadata.name
                    rv = pod.metadata.resource_version
                    census.events.append((loop.time(), event["type"], name))
                    new = name not in census.seen
                    census.seen.add(name)
                    if event["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                        census.alive.discard(name)
                        census.left_at.setdefault(name, loop.time())
                    else:
                        census.alive.add(name)
                    census.check(loop.time())
                    creation_limit = census.creation_limit
                    if new and creation_limit is not None and len(census.alive) > creation_limit():
                        census.violations.append(
                            f"{name} created with {len(census.alive)} pods alive > "
                            f"{creation_limit()} needed: {sorted(census.alive)}"
                        )
        except client.ApiException as exc:
            if exc.status != 410:
                census.blind += 1
                await asyncio.sleep(0.5)
            rv = None
        except (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError):
            # The API server is down (the fault under test): look again once it answers.
            census.blind += 1
            rv = None
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def pod_census(
    api: client.ApiClient, *, namespace: str, cluster_id: str
) -> AsyncIterator[PodCensus]:
    census = PodCensus()
    task = asyncio.create_task(_census(api, namespace, f"{TM_SELECTOR},app={cluster_id}", census))
    try:
        yield census
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running_daemon(
    *,
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    extra: Mapping[str, str] | None = None,
    cluster_id: str | None = None,
    kubeconfig: Path | None = None,
    wait_ready: bool = True,
    address: str = "127.0.0.1",
    port: int | None = None,
    as_process: bool = False,
    token: str | None = None,
) -> AsyncIterator[RunningDaemon]:
    """The daemon on ``address`` (a loopback address, e.g. an emulated pod's IP) and
    ``port`` (default: a free one); ``kubeconfig`` (default: the admin one) is its identity."""
    cluster_id = cluster_id or f"flink-{secrets.token_hex(3)}"
    port = port or free_port()
    # An empty configuration directory: only the overrides count (not ./conf of the checkout).
    empty_conf_dir = Path(tempfile.mkdtemp(prefix="rmd-conf-"))
    overrides = daemon_overrides(
        cluster_id=cluster_id, namespace=namespace, port=port, address=address, extra=extra
    )
    url = f"http://{address}:{port}"
    starting = (
        _daemon_process(
            conf_dir=empty_conf_dir,
            overrides=overrides,
            kubeconfig=kubeconfig or dev_cluster.kubeconfig,
            url=url,
        )
        if as_process
        else _daemon_task(
            conf_dir=empty_conf_dir,
            overrides=overrides,
            kubeconfig=kubeconfig or dev_cluster.kubeconfig,
        )
    )
    try:
        async with (
            starting as process,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
        ):
            daemon = RunningDaemon(
                url=url,
                cluster_id=cluster_id,
                namespace=namespace,
                http=http,
                core=client.CoreV1Api(kube_api),
                process=process,
                log_path=empty_conf_dir / "daemon.log" if process is not None else None,
                token=token,
            )

            async def ready() -> bool:
                async with http.get(f"{url}/readyz") as resp:
                    return resp.status == 200

            if wait_ready:
                await eventually(ready, timeout=30, what="daemon /readyz")
            yield daemon
    finally:
        # Leave nothing behind: remove the TaskManager pods of this daemon, once it stopped.
        await client.CoreV1Api(kube_api).delete_collection_namespaced_pod(
            namespace,
            label_selector=f"{TM_SELECTOR},app={cluster_id}",
            _request_timeout=REQUEST_TIMEOUT,
        )


@contextlib.asynccontextmanager
async def _daemon_task(
    *, conf_dir: Path, overrides: list[str], kubeconfig: Path
) -> AsyncIterator[None]:
    """:func:`rmd.daemon.serve` in this event loop, until the block ends."""
    config = load_daemon_config(conf_dir=conf_dir, overrides=overrides)
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(
        serve(config, stop=stop, kubeconfig=kubeconfig, on_started=lambda _port: started.set())
    )
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what went wrong
    assert started.is_set(), "daemon did not start listening within 30 s"
    try:
        yield None
    finally:
        stop.set()
        await within(task, seconds=30, what="the daemon task to stop")


@contextlib.asynccontextmanager
async def _daemon_process(
    *, conf_dir: Path, overrides: list[str], kubeconfig: Path, url: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``rmd daemon`` as a process (its own session; log in ``conf_dir/daemon.log``) until the
    block ends; then SIGCONT (it may be stopped), SIGTERM, SIGKILL after 30 s."""
    argv = [sys.executable, "-m", "rmd", "daemon", "--conf-dir", str(conf_dir)]
    argv += ["--kubeconfig", str(kubeconfig)]
    for override in overrides:
        argv += ["-D", override]
    with (conf_dir / "daemon.log").open("ab") as sink:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def listening() -> bool:
                assert process.returncode is None, (
                    f"rmd daemon exited with {process.returncode}: see {conf_dir / 'daemon.log'}"
                )
                try:
                    async with http.get(f"{url}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(listening, timeout=30, what="rmd daemon to listen")
        yield process
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
                os.kill(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                await process.wait()


async def metrics_after_a_job(
    *, dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> str:
    """``/metrics`` of a daemon that has created pods, seen them register and allocated
    their slots (a 4-slot job fulfilled), so that every kind of metric has samples."""
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace
    ) as daemon:
        await daemon.put_requirement("j1", 4)
        await daemon.wait_fulfilled("j1")
        return await daemon.metrics()
