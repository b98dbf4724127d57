"""Run the real daemon against the real control plane, and watch what it does to pods.

The daemon runs in the test's event loop through :func:`rmd.daemon.serve` — the same code
``rmd daemon`` runs — and is driven only over HTTP, as a JobMaster and the TaskManager
agents would. Its TaskManager pods run the real agent as OS processes under the node
emulator (``emulator.rmd.dev/run: process``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch

from rmd.daemon import load_daemon_config, serve
from rmd_dev.cluster import free_port
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo
from tests.support.waiting import eventually, within

TM_SELECTOR = "type=flink-native-kubernetes,component=taskmanager"


def daemon_overrides(
    *, cluster_id: str, namespace: str, port: int, extra: Mapping[str, str] | None = None
) -> list[str]:
    values = {
        "kubernetes.cluster-id": cluster_id,
        "kubernetes.namespace": namespace,
        "kubernetes.container.image": "rmd-taskmanager:dev",
        "taskmanager.numberOfTaskSlots": "4",
        "taskmanager.memory.process.size": "256m",
        "kubernetes.taskmanager.cpu": "0.1",
        "rmd.rest.address": "127.0.0.1",
        "rmd.rest.port": str(port),
        "rmd.taskmanager.resourcemanager-url": f"http://127.0.0.1:{port}",
        "rmd.taskmanager.agent-command": f"{sys.executable};-m;rmd;taskmanager",
        "rmd.taskmanager.supervise-flink": "false",
        "kubernetes.taskmanager.annotations": "emulator.rmd.dev/run:process",
        "heartbeat.interval": "1 s",
        "heartbeat.timeout": "10 s",
        "rmd.kubernetes.resync-interval": "30 s",
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

    async def put_requirement(self, job_id: str, slots: int) -> dict[str, Any]:
        async with self.http.put(
            f"{self.url}/v1/jobs/{job_id}/requirements", json={"slots": slots}
        ) as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body

    async def get_json(self, path: str, *, expect: int = 200) -> Any:
        async with self.http.get(f"{self.url}{path}") as resp:
            assert resp.status == expect, f"{path}: {resp.status} {await resp.text()}"
            return await resp.json(content_type=None)

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


@dataclass
class PodCensus:
    """An independent watcher of the TaskManager pods: records every pod ever seen and the
    most pods alive (not being deleted) at any one time."""

    seen: set[str] = field(default_factory=set)
    alive: set[str] = field(default_factory=set)
    max_alive: int = 0
    events: list[tuple[float, str, str]] = field(default_factory=list)
    left_at: dict[str, float] = field(default_factory=dict)  # when a pod stopped being alive
    violations: list[str] = field(default_factory=list)
    limit: Callable[[], int] | None = None


async def _census(api: client.ApiClient, namespace: str, selector: str, census: PodCensus) -> None:
    core = client.CoreV1Api(api)
    loop = asyncio.get_running_loop()
    rv: str | None = None
    while True:
        if rv is None:
            listed = await core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
            rv = listed.metadata.resource_version
            census.alive = {
                p.metadata.name for p in listed.items if not p.metadata.deletion_timestamp
            }
            census.seen |= census.alive
        async with watch.Watch() as w:
            try:
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
                    census.seen.add(name)
                    if event["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                        census.alive.discard(name)
                        census.left_at.setdefault(name, loop.time())
                    else:
                        census.alive.add(name)
                    census.max_alive = max(census.max_alive, len(census.alive))
                    if census.limit is not None and len(census.alive) > census.limit():
                        census.violations.append(
                            f"{len(census.alive)} pods alive > limit {census.limit()}: "
                            f"{sorted(census.alive)}"
                        )
            except client.ApiException as exc:
                if exc.status == 410:
                    rv = None
                    continue
                raise


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
) -> AsyncIterator[RunningDaemon]:
    """The daemon on a free port; ``kubeconfig`` (default: the admin one) is its identity."""
    cluster_id = cluster_id or f"flink-{secrets.token_hex(3)}"
    port = free_port()
    # An empty configuration directory: only the overrides count (not ./conf of the checkout).
    empty_conf_dir = Path(tempfile.mkdtemp(prefix="rmd-conf-"))
    config = load_daemon_config(
        conf_dir=empty_conf_dir,
        overrides=daemon_overrides(
            cluster_id=cluster_id, namespace=namespace, port=port, extra=extra
        ),
    )
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(
        serve(
            config,
            stop=stop,
            kubeconfig=kubeconfig or dev_cluster.kubeconfig,
            on_started=lambda _port: started.set(),
        )
    )
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what went wrong
    assert started.is_set(), "daemon did not start listening within 30 s"
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        daemon = RunningDaemon(
            url=url,
            cluster_id=cluster_id,
            namespace=namespace,
            http=http,
            core=client.CoreV1Api(kube_api),
        )

        async def ready() -> bool:
            async with http.get(f"{url}/readyz") as resp:
                return resp.status == 200

        try:
            if wait_ready:
                await eventually(ready, timeout=30, what="daemon /readyz")
            yield daemon
        finally:
            stop.set()
            await within(task, seconds=30, what="the daemon task to stop")
            # Leave nothing behind: remove the TaskManager pods of this daemon.
            await daemon.core.delete_collection_namespaced_pod(
                namespace,
                label_selector=f"{TM_SELECTOR},app={cluster_id}",
                _request_timeout=REQUEST_TIMEOUT,
            )


@contextlib.asynccontextmanager
async def daemon_process(
    *, dev_cluster: DevClusterInfo, argv: list[str], log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``rmd daemon <argv>`` as a process (output appended to ``log``); killed if still
    running at the end."""
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rmd", "daemon", *argv, stdout=sink, stderr=sink
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
