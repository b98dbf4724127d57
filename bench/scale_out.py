"""Scale-out and idle cost: rmd (the real daemon, as its own process) against the bare API.

Baseline, in the same run: a bare kubernetes_asyncio script creates the same TaskManager pod
manifests at the same concurrency (``rmd.kubernetes.max-parallel-requests``). Both are timed
by an independent watch (:class:`PodCensus`) until every pod exists. rmd: declaration →
every pod exists (the same watch) → every TaskManager registered (``/v1/status``) → the job
fulfilled (a long poll on the compact view). The pods run in-process agents under the node
emulator (``emulator.rmd.dev/run: coroutine``): the baseline's pods only sleep, rmd's run
the real agent, which registers and heartbeats every ``heartbeat.interval``.

Idle cost: once fulfilled, the daemon's CPU (% of one core) and RSS over a window while
every TaskManager heartbeats every 10 s, and how its RSS grew over the window.
Per-process CPU (kube-apiserver, node emulator, daemon, this script) comes from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from bench.procstat import CpuMeter, rss_bytes
from rmd.config.flinkconf import FlinkConfiguration
from rmd.config.settings import RmdSettings
from rmd.kube.podspec import TaskManagerPodFactory
from rmd_dev.cluster import free_port

SLOTS = 1
TIMEOUT = (5, 60)
HEARTBEAT_INTERVAL = "10 s"
MB = 1024 * 1024


def manifest_options(
    *, cluster_id: str, namespace: str, port: int, parallel: int, workload: str
) -> dict[str, str]:
    return {
        "kubernetes.cluster-id": cluster_id,
        "kubernetes.namespace": namespace,
        "taskmanager.numberOfTaskSlots": str(SLOTS),
        "taskmanager.memory.process.size": "64m",
        "kubernetes.taskmanager.cpu": "0.01",
        "rmd.rest.address": "127.0.0.1",
        "rmd.rest.port": str(port),
        "rmd.taskmanager.resourcemanager-url": f"http://127.0.0.1:{port}",
        "rmd.taskmanager.supervise-flink": "false",
        "kubernetes.taskmanager.annotations": "emulator.rmd.dev/run:coroutine,"
        f"emulator.rmd.dev/workload:{workload}",
        "heartbeat.interval": HEARTBEAT_INTERVAL,
        "rmd.kubernetes.max-parallel-requests": str(parallel),
        "rmd.log.level": "warning",
    }


# ---------------------------------------------------------------------------- the watch


@dataclass(frozen=True)
class Arrivals:
    """When the first, the middle and the last pod of a scale-out were first seen."""

    first_s: float
    half_s: float
    all_s: float


class PodCensus:
    """An independent watch of one cluster id's pods: when did the n-th pod first exist.

    Reads the raw JSON lines of one LIST + WATCH (no model classes), so watching costs this
    process little. ``alive``: pods not being deleted; ``peak``: the most alive at once since
    :meth:`reset_peak`; ``added_at``: when each was first seen, in that order; ``deleting``:
    when each was first seen being deleted; ``gone``: those deleted from the API server (times
    are ``time.perf_counter()``)."""

    def __init__(self, core: client.CoreV1Api, namespace: str, cluster_id: str) -> None:
        self._core = core
        self._namespace = namespace
        self._selector = f"app={cluster_id}"
        self.seen: set[str] = set()
        self.added_at: dict[str, float] = {}  # when each was first seen, in that order
        self.alive: set[str] = set()  # seen, not being deleted
        self.deleting: dict[str, float] = {}  # when each was first seen being deleted
        self.gone: set[str] = set()  # deleted from the API server
        self.peak = 0
        self.listed = asyncio.Event()
        self._changed = asyncio.Event()

    async def run(self) -> None:
        # _preload_content=False: the raw aiohttp response (the stubs do not know it)
        response: Any = await self._core.list_namespaced_pod(
            self._namespace,
            label_selector=self._selector,
            _preload_content=False,
            _request_timeout=TIMEOUT,
        )
        listed = json.loads(await response.read())
        for pod in listed["items"]:
            self._note("ADDED", pod["metadata"])
        version = listed["metadata"]["resourceVersion"]
        self.listed.set()
        while True:
            stream: Any = await self._core.list_namespaced_pod(
                self._namespace,
                label_selector=self._selector,
                watch=True,
                resource_version=version,
                timeout_seconds=300,
                _preload_content=False,
                _request_timeout=(5, 330),
            )
            async with stream:
                async for line in stream.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    metadata = event["object"]["metadata"]
                    version = metadata["resourceVersion"]
                    self._note(event["type"], metadata)

    def _note(self, kind: str, metadata: dict[str, Any]) -> None:
        name = metadata.get("name", "")
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK, ERROR: no pod
        if name not in self.seen:
            self.seen.add(name)
            self.added_at[name] = time.perf_counter()
        if kind == "DELETED" or metadata.get("deletionTimestamp"):
            self.deleting.setdefault(name, time.perf_counter())
            self.alive.discard(name)
            if kind == "DELETED":
                self.gone.add(name)
        else:
            self.alive.add(name)
            self.peak = max(self.peak, len(self.alive))
        self._changed.set()

    def reset_peak(self) -> None:
        self.peak = len(self.alive)

    async def all_added(self, pods: int, *, timeout: float, what: str) -> float:
        """When the watch saw the ``pods``-th pod (its event's time, however late the caller
        looks)."""
        await self.until(lambda: len(self.seen) >= pods, timeout=timeout, what=what)
        return list(self.added_at.values())[pods - 1]

    def arrivals(self, pods: int, *, since: float) -> Arrivals:
        """When the first, the middle and the ``pods``-th pod were first seen, in s after
        ``since``: a slow start and a slow rate look alike in the last figure alone."""
        times = list(self.added_at.values())
        return Arrivals(
            first_s=round(times[0] - since, 3),
            half_s=round(times[(pods - 1) // 2] - since, 3),
            all_s=round(times[pods - 1] - since, 3),
        )

    async def until(self, condition: Any, *, timeout: float, what: str) -> float:
        """Wait until ``condition()``; the time.perf_counter() it first held."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                try:
                    await self._changed.wait()
                except TimeoutError:
                    raise TimeoutError(f"{what}: not within {timeout:g} s") from None
        return time.perf_counter()


@contextlib.asynccontextmanager
async def census(core: client.CoreV1Api, namespace: str, cluster_id: str) -> Any:
    """A running :class:`PodCensus` whose first LIST has been read."""
    watcher = PodCensus(core, namespace, cluster_id)
    task = asyncio.create_task(watcher.run())
    try:
        listed = asyncio.create_task(watcher.listed.wait())
        await asyncio.wait({task, listed}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        listed.cancel()
        if task.done():
            task.result()  # the watch failed: say why
        if not watcher.listed.is_set():
            raise TimeoutError("the pod census could not LIST within 60 s")
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def delete_pods(core: client.CoreV1Api, namespace: str, cluster_id: str) -> None:
    """Delete every pod of ``cluster_id`` and wait until the API server has none left."""
    selector = f"app={cluster_id}"
    await core.delete_collection_namespaced_pod(
        namespace, label_selector=selector, grace_period_seconds=0, _request_timeout=TIMEOUT
    )
    async with asyncio.timeout(300):
        while True:  # a benchmark's clean-up: polling the API is fine here
            left = await core.list_namespaced_pod(
                namespace, label_selector=selector, limit=1, _request_timeout=TIMEOUT
            )
            if not left.items:
                return
            await asyncio.sleep(0.5)


# ---------------------------------------------------------------------------- baseline


def pod_factory(options: dict[str, str]) -> TaskManagerPodFactory:
    """The daemon's own pod manifests for ``options``, for the bare baselines."""
    conf = FlinkConfiguration(options)
    return TaskManagerPodFactory.from_configuration(conf, RmdSettings.from_configuration(conf))


@dataclass
class BaselineResult:
    pods: int
    parallel: int
    creates_answered_s: float
    all_exist_s: float
    cpu_percent: dict[str, float]
    arrivals: Arrivals
    create_ms_mean: float  # a create's answer time, as the client saw it


async def baseline(
    core: client.CoreV1Api, *, namespace: str, pods: int, parallel: int, pids: dict[str, int]
) -> BaselineResult:
    """The same manifests through bare kubernetes_asyncio calls, ``parallel`` at a time."""
    cluster_id = f"base-{pods}-{parallel}-{int(time.time()) % 100000}"
    options = manifest_options(
        cluster_id=cluster_id, namespace=namespace, port=8090, parallel=parallel, workload="sleep"
    )
    factory = pod_factory(options)
    gate = asyncio.Semaphore(parallel)

    latencies: list[float] = []

    async def create(index: int) -> None:
        body: Any = factory.build(pod_name=f"{cluster_id}-taskmanager-1-{index}", owner=None)
        async with gate:
            sent = time.perf_counter()
            await core.create_namespaced_pod(namespace, body=body, _request_timeout=TIMEOUT)
            latencies.append(time.perf_counter() - sent)

    async with census(core, namespace, cluster_id) as watcher:
        meter = CpuMeter(pids)
        meter.start()
        began = time.perf_counter()
        await asyncio.gather(*(create(index) for index in range(1, pods + 1)))
        answered = time.perf_counter() - began
        exist = await watcher.all_added(pods, timeout=600, what="baseline pods")
        cpu = meter.stop()
        arrivals = watcher.arrivals(pods, since=began)
    await delete_pods(core, namespace, cluster_id)
    return BaselineResult(
        pods,
        parallel,
        round(answered, 3),
        round(exist - began, 3),
        cpu,
        arrivals,
        create_ms_mean=round(1000 * sum(latencies) / len(latencies), 1),
    )


# ---------------------------------------------------------------------------- rmd


@dataclass
class IdleResult:
    taskmanagers: int
    window_s: float
    daemon_cpu_percent: float
    rss_mb_start: float
    rss_mb_end: float
    rss_mb_peak: float
    rss_growth_mb: float
    registered_at_end: int  # nobody lost while idle: the same as taskmanagers
    # TaskManagers heartbeating over the heartbeat channel at the end (the rest use HTTP)
    heartbeat_channels_at_end: int = 0
    # the curve: (seconds into the window, RSS MB) every 5 s, to tell a step from growth
    rss_mb_series: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class RmdResult:
    pods: int
    parallel: int
    all_exist_s: float
    all_registered_s: float
    fulfilled_s: float
    cpu_percent: dict[str, float]  # declaration -> fulfilled
    cpu_percent_until_exist: dict[str, float]  # declaration -> every pod exists
    arrivals: Arrivals
    create_ms_mean: float  # a create's answer time, as the daemon saw it (its /metrics)
    daemon_rss_mb: float
    # Kubernetes Events written and dropped by then: Events share the daemon's API limit
    events_at_fulfilled: dict[str, int] = field(default_factory=dict)
    idle: IdleResult | None = None
    notes: list[str] = field(default_factory=list)


class DaemonProcess:
    """``rmd daemon`` as its own process (so /proc measures it alone)."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        options: dict[str, str],
        log: Path,
        tree: Path | None = None,
    ) -> None:
        self._tree = tree  # another checkout to run the daemon from (before/after)
        self._kubeconfig = kubeconfig
        self._options = options
        self._log_path = log
        self.port = int(options["rmd.rest.port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def __aenter__(self) -> DaemonProcess:
        conf_dir = Path(tempfile.mkdtemp(prefix="rmd-bench-conf-"))  # only the -D count
        # RMD_BENCH_DAEMON_PREFIX runs the daemon under a profiler ("memray run -o FILE"):
        # its words replace ``python`` before ``-m rmd daemon`` (docs/PERFORMANCE.md).
        prefix = shlex.split(os.environ.get("RMD_BENCH_DAEMON_PREFIX", "")) or [sys.executable]
        argv = [*prefix, "-m", "rmd", "daemon", "--conf-dir", str(conf_dir)]
        argv += ["--kubeconfig", str(self._kubeconfig)]
        for key, value in self._options.items():
            argv += ["-D", f"{key}={value}"]
        log = self._log_path.open("ab")
        env = None if self._tree is None else {**os.environ, "PYTHONPATH": str(self._tree)}
        self.process = await asyncio.create_subprocess_exec(
            *argv, stdout=log, stderr=log, cwd=self._tree, env=env
        )
        log.close()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            async with asyncio.timeout(30):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def ready(self, http: aiohttp.ClientSession, *, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if self.process is not None and self.process.returncode is not None:
                    raise RuntimeError(f"the daemon exited ({self._log_path})")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)


async def rmd_run(
    core: client.CoreV1Api,
    *,
    kubeconfig: Path,
    namespace: str,
    pods: int,
    parallel: int,
    pids: dict[str, int],
    idle_window: float | None,
    log_dir: Path,
    daemon_tree: Path | None = None,
) -> RmdResult:
    cluster_id = f"rmd-{pods}-{parallel}-{int(time.time()) % 100000}"
    options = manifest_options(
        cluster_id=cluster_id,
        namespace=namespace,
        port=free_port(),
        parallel=parallel,
        workload="rmd-agent",
    )
    daemon = DaemonProcess(
        kubeconfig=kubeconfig,
        options=options,
        log=log_dir / f"{cluster_id}.log",
        tree=daemon_tree,
    )
    timeout = aiohttp.ClientTimeout(total=120)
    try:
        async with (
            daemon,
            aiohttp.ClientSession(timeout=timeout) as http,
            census(core, namespace, cluster_id) as watcher,
        ):
            await daemon.ready(http)
            meter = CpuMeter({**pids, "daemon": daemon.pid})
            meter.start()
            began = time.perf_counter()
            async with http.put(
                f"{daemon.url}/v1/jobs/bench/requirements", json={"slots": pods * SLOTS}
            ) as response:
                response.raise_for_status()
            registered = asyncio.create_task(all_registered(http, daemon.url, pods))
            fulfilled = asyncio.create_task(until_fulfilled(http, daemon.url))
            try:
                exist = await watcher.all_added(pods, timeout=900, what="rmd's pods")
                cpu_until_exist = meter.stop()  # so far: stop() may be read again
                create_ms = mean_create_ms(await daemon_metrics(http, daemon.url))
                registered_at = await registered
                fulfilled_at = await fulfilled
                events = event_counts(await daemon_metrics(http, daemon.url))
            finally:
                for task in (registered, fulfilled):
                    task.cancel()
                await asyncio.gather(registered, fulfilled, return_exceptions=True)
            cpu = meter.stop()
            result = RmdResult(
                pods=pods,
                parallel=parallel,
                all_exist_s=round(exist - began, 3),
                all_registered_s=round(registered_at - began, 3),
                fulfilled_s=round(fulfilled_at - began, 3),
                cpu_percent=cpu,
                cpu_percent_until_exist=cpu_until_exist,
                arrivals=watcher.arrivals(pods, since=began),
                create_ms_mean=create_ms,
                events_at_fulfilled=events,
                daemon_rss_mb=round(rss_bytes(daemon.pid) / MB, 1),
            )
            if idle_window:
                result.idle = await idle_cost(http, daemon, taskmanagers=pods, window=idle_window)
            return result
    finally:
        await delete_pods(core, namespace, cluster_id)


async def daemon_metrics(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as response:
        return await response.text()


def mean_create_ms(metrics_text: str) -> float:
    """The mean answer time of the daemon's pod creates so far, from its /metrics."""
    total = count = 0.0
    for line in metrics_text.splitlines():
        if 'verb="create"' not in line:
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("rmd_kubernetes_api_request_duration_seconds_sum"):
            total += float(value)
        elif name.startswith("rmd_kubernetes_api_request_duration_seconds_count"):
            count += float(value)
    return round(1000 * total / max(count, 1.0), 1)


def event_counts(metrics_text: str) -> dict[str, int]:
    """Kubernetes Events the daemon wrote and dropped so far, from its /metrics."""
    counts = {"written": 0, "dropped": 0}
    for line in metrics_text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("rmd_kubernetes_events_written_total{"):
            counts["written"] += int(float(value))
        elif name.startswith("rmd_kubernetes_events_dropped_total{"):
            counts["dropped"] += int(float(value))
    return counts


async def all_registered(http: aiohttp.ClientSession, url: str, count: int) -> float:
    """When ``/v1/status`` first shows ``count`` registered TaskManagers (polled every
    0.1 s: the figure is that precise)."""
    async with asyncio.timeout(900):
        while True:
            async with http.get(f"{url}/v1/status") as response:
                status = await response.json()
            if status["taskmanagers"].get("registered", 0) >= count:
                return time.perf_counter()
            await asyncio.sleep(0.1)


async def until_fulfilled(http: aiohttp.ClientSession, url: str) -> float:
    """Long-poll the compact view until the job is fulfilled."""
    async with asyncio.timeout(900):
        while True:
            async with http.get(f"{url}/v1/jobs/bench?wait=60&slots=false") as response:
                view = await response.json()
            if view["fulfilled"]:
                return time.perf_counter()


async def idle_cost(
    http: aiohttp.ClientSession, daemon: DaemonProcess, *, taskmanagers: int, window: float
) -> IdleResult:
    """The daemon with nothing to decide: every TaskManager heartbeats, nothing changes."""
    # Not idle while the scale-out's rmd.dev/state label patches still go out (at 3,000 that
    # is a minute and a half after fulfilment, at four times the idle cost): wait for them.
    await until_labels_settled(http, daemon.url)
    await asyncio.sleep(15.0)  # a benchmark's settling time: the first heartbeat round passes
    meter = CpuMeter({"daemon": daemon.pid})
    start_rss = peak_rss = rss_bytes(daemon.pid)
    series = [(0.0, round(start_rss / MB, 1))]
    meter.start()
    began = time.monotonic()
    while (left := window - (time.monotonic() - began)) > 0:
        await asyncio.sleep(min(5.0, left))
        rss = rss_bytes(daemon.pid)
        peak_rss = max(peak_rss, rss)
        series.append((round(time.monotonic() - began, 1), round(rss / MB, 1)))
    cpu = meter.stop()["daemon"]
    end_rss = rss_bytes(daemon.pid)
    async with http.get(f"{daemon.url}/v1/status") as response:
        registered = (await response.json())["taskmanagers"].get("registered", 0)
    async with http.get(f"{daemon.url}/metrics") as response:
        channels = sum(
            float(line.rsplit(" ", 1)[1])
            for line in (await response.text()).splitlines()
            if line.startswith("rmd_heartbeat_channels ")
        )
    return IdleResult(
        taskmanagers=taskmanagers,
        window_s=window,
        daemon_cpu_percent=cpu,
        rss_mb_start=round(start_rss / MB, 1),
        rss_mb_end=round(end_rss / MB, 1),
        rss_mb_peak=round(peak_rss / MB, 1),
        rss_growth_mb=round((end_rss - start_rss) / MB, 1),
        registered_at_end=registered,
        heartbeat_channels_at_end=int(channels),
        rss_mb_series=series,
    )


async def until_labels_settled(
    http: aiohttp.ClientSession, url: str, *, quiet_for: float = 10.0, timeout: float = 600.0
) -> None:
    """Until the daemon's count of pod-label patches has not moved for ``quiet_for`` s
    (polled from /metrics every second: a benchmark's wait)."""
    last: float | None = None
    still_since = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            async with http.get(f"{url}/metrics") as response:
                text = await response.text()
            patches = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("rmd_pod_state_label_patches_total{")
            )
            if patches != last:
                last, still_since = patches, time.monotonic()
            elif time.monotonic() - still_since >= quiet_for:
                return
            await asyncio.sleep(1.0)


def as_json(value: Any) -> Any:
    return asdict(value)
