"""Reaction: how soon rmd acts on a change, over many trials (p50 / p99), each against the
bare API calls the same reaction needs, measured in the same run by the same independent
watch (:class:`bench.scale_out.PodCensus`).

- **declare**: a job's requirement +1 slot → the new pod ADDED (and → registered: the job
  fulfilled again). Baseline: a bare create → ADDED.
- **replace**: a TaskManager pod deleted (as ``kubectl delete pod`` does, default grace
  period) → the replacement pod ADDED (and → registered). Baseline: a bare delete, then a
  create once the delete is answered → ADDED.
- **release**: a requirement of one slot less → its idle TaskManager's pod deleted (its
  deletionTimestamp seen) after ``resourcemanager.taskmanager-timeout`` T: the excess over T.
  No baseline: the excess is itself the figure (rmd's timer and the delete call).

One slot per TaskManager; trials run one after the other, each from a settled state (the job
fulfilled again before the next).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from bench.procstat import CpuMeter
from bench.scale_out import (
    SLOTS,
    TIMEOUT,
    DaemonProcess,
    PodCensus,
    census,
    delete_pods,
    manifest_options,
    pod_factory,
)
from rmd_dev.cluster import free_port

WAIT = 60.0  # the longest one trial may take (s)


@dataclass(frozen=True)
class Latencies:
    """Milliseconds over ``trials``; p99 by nearest rank (over 50 trials: the largest)."""

    trials: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


def latencies(seconds: list[float]) -> Latencies:
    if not seconds:
        raise ValueError("no trials to summarise")
    ordered = sorted(seconds)

    def rank(fraction: float) -> float:
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]

    return Latencies(
        trials=len(ordered),
        p50_ms=round(1000 * rank(0.50), 1),
        p99_ms=round(1000 * rank(0.99), 1),
        mean_ms=round(1000 * sum(ordered) / len(ordered), 1),
        max_ms=round(1000 * ordered[-1], 1),
    )


@dataclass
class ReactionResult:
    trials: int
    idle_timeout_s: float
    declare_added: Latencies
    declare_registered: Latencies
    baseline_create_added: Latencies
    replace_added: Latencies
    replace_registered: Latencies
    baseline_delete_create_added: Latencies
    release_excess: Latencies
    cpu_percent: dict[str, float]


async def bare_reactions(
    core: client.CoreV1Api, *, namespace: str, trials: int
) -> tuple[Latencies, Latencies]:
    """(create → ADDED, delete → create → ADDED) through bare kubernetes_asyncio calls."""
    cluster_id = f"bare-react-{int(time.time()) % 100000}"
    factory = pod_factory(
        manifest_options(
            cluster_id=cluster_id, namespace=namespace, port=8090, parallel=1, workload="sleep"
        )
    )

    async def create(index: int) -> str:
        name = f"{cluster_id}-taskmanager-1-{index}"
        body: Any = factory.build(pod_name=name, owner=None)
        await core.create_namespaced_pod(namespace, body=body, _request_timeout=TIMEOUT)
        return name

    creates: list[float] = []
    round_trips: list[float] = []
    try:
        async with census(core, namespace, cluster_id) as watcher:
            for index in range(1, trials + 1):
                began = time.perf_counter()
                name = await create(index)
                creates.append(await _added(watcher, name) - began)
            for index in range(1, trials + 1):
                began = time.perf_counter()
                await core.delete_namespaced_pod(
                    f"{cluster_id}-taskmanager-1-{index}", namespace, _request_timeout=TIMEOUT
                )
                name = await create(trials + index)
                round_trips.append(await _added(watcher, name) - began)
    finally:
        await delete_pods(core, namespace, cluster_id)
    return latencies(creates), latencies(round_trips)


async def _added(watcher: PodCensus, name: str) -> float:
    """When the watch first saw ``name`` (not when this call noticed it)."""
    await watcher.until(lambda: name in watcher.seen, timeout=WAIT, what=f"pod {name}")
    return watcher.added_at[name]


class JobClient:
    """One job of the daemon's HTTP API, as a JobMaster drives it."""

    def __init__(self, http: aiohttp.ClientSession, url: str, job: str) -> None:
        self._http = http
        self._job = f"{url}/v1/jobs/{job}"

    async def declare(self, slots: int) -> None:
        async with self._http.put(f"{self._job}/requirements", json={"slots": slots}) as answer:
            answer.raise_for_status()

    async def remove(self) -> None:
        async with self._http.delete(self._job) as answer:
            answer.raise_for_status()

    async def fulfilled(self, *, timeout: float = WAIT) -> float:
        """Long-poll until the job is fulfilled; the time.perf_counter() it answered."""
        deadline = time.perf_counter() + timeout
        while (left := deadline - time.perf_counter()) > 0:
            async with self._http.get(f"{self._job}?wait={left:.1f}&slots=false") as answer:
                answer.raise_for_status()
                if (await answer.json())["fulfilled"]:
                    return time.perf_counter()
        raise TimeoutError(f"{self._job}: not fulfilled within {timeout:g} s")


@dataclass(frozen=True)
class DrivenDaemon:
    """``rmd daemon`` as its own process, ready, with a job client and the pod census."""

    daemon: DaemonProcess
    http: aiohttp.ClientSession
    job: JobClient
    watcher: PodCensus


@contextlib.asynccontextmanager
async def driven_daemon(
    core: client.CoreV1Api,
    *,
    kubeconfig: Path,
    namespace: str,
    name: str,
    job_id: str,
    log_dir: Path,
    daemon_tree: Path | None,
    options: dict[str, str],
) -> AsyncIterator[DrivenDaemon]:
    """A daemon of its own cluster id (``name``-<n>, agents in-process, parallelism 8,
    ``options`` on top) and a client of its job ``job_id``; its pods deleted at the end."""
    cluster_id = f"{name}-{int(time.time()) % 100000}"
    all_options = manifest_options(
        cluster_id=cluster_id,
        namespace=namespace,
        port=free_port(),
        parallel=8,
        workload="rmd-agent",
    )
    all_options.update(options)
    daemon = DaemonProcess(
        kubeconfig=kubeconfig,
        options=all_options,
        log=log_dir / f"{cluster_id}.log",
        tree=daemon_tree,
    )
    try:
        async with (
            daemon,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2 * WAIT)) as http,
            census(core, namespace, cluster_id) as watcher,
        ):
            await daemon.ready(http)
            yield DrivenDaemon(daemon, http, JobClient(http, daemon.url, job_id), watcher)
    finally:
        await delete_pods(core, namespace, cluster_id)


async def reaction(
    core: client.CoreV1Api,
    *,
    kubeconfig: Path,
    namespace: str,
    trials: int,
    pids: dict[str, int],
    log_dir: Path,
    idle_timeout: float = 1.0,
    daemon_tree: Path | None = None,
) -> ReactionResult:
    base_create, base_round_trip = await bare_reactions(core, namespace=namespace, trials=trials)
    declare_added: list[float] = []
    declare_registered: list[float] = []
    replace_added: list[float] = []
    replace_registered: list[float] = []
    release_excess: list[float] = []
    async with driven_daemon(
        core,
        kubeconfig=kubeconfig,
        namespace=namespace,
        name="react",
        job_id="reaction",
        log_dir=log_dir,
        daemon_tree=daemon_tree,
        options={"resourcemanager.taskmanager-timeout": f"{idle_timeout:g} s"},
    ) as driven:
        daemon, job, watcher = driven.daemon, driven.job, driven.watcher
        meter = CpuMeter({**pids, "daemon": daemon.pid})
        meter.start()
        for slots in range(SLOTS, (trials + 1) * SLOTS, SLOTS):
            before = len(watcher.seen)
            began = time.perf_counter()
            await job.declare(slots)
            added = await _more_seen(watcher, before)
            declare_added.append(added - began)
            declare_registered.append(await job.fulfilled() - began)
        for _ in range(trials):
            victim = min(watcher.alive)
            before = len(watcher.seen)
            began = time.perf_counter()
            await core.delete_namespaced_pod(victim, namespace, _request_timeout=TIMEOUT)
            added = await _more_seen(watcher, before)
            replace_added.append(added - began)
            replace_registered.append(await job.fulfilled() - began)
        for slots in range((trials - 1) * SLOTS, -1, -SLOTS):
            before = len(watcher.deleting)
            began = time.perf_counter()
            await job.declare(slots)
            await watcher.until(
                lambda: len(watcher.deleting) > before,  # noqa: B023 (awaited here)
                timeout=WAIT + idle_timeout,
                what="an idle pod deleted",
            )
            deleted = list(watcher.deleting.values())[before]
            release_excess.append(deleted - began - idle_timeout)
        cpu = meter.stop()
    return ReactionResult(
        trials=trials,
        idle_timeout_s=idle_timeout,
        declare_added=latencies(declare_added),
        declare_registered=latencies(declare_registered),
        baseline_create_added=base_create,
        replace_added=latencies(replace_added),
        replace_registered=latencies(replace_registered),
        baseline_delete_create_added=base_round_trip,
        release_excess=latencies(release_excess),
        cpu_percent=cpu,
    )


async def _more_seen(watcher: PodCensus, before: int) -> float:
    """When the watch first saw the pod after the ``before`` it had seen (the event's time:
    the caller may only look once the API call that caused it has been answered)."""
    await watcher.until(lambda: len(watcher.seen) > before, timeout=WAIT, what="a new pod ADDED")
    return list(watcher.added_at.values())[before]


def reaction_lines(result: dict[str, Any]) -> list[str]:
    """The table's reaction rows, from :class:`ReactionResult` as JSON."""
    rows = [
        ("+1 slot -> pod ADDED", "declare_added", "baseline_create_added", "bare create"),
        ("+1 slot -> registered", "declare_registered", None, ""),
        ("pod deleted -> new ADDED", "replace_added", "baseline_delete_create_added", "bare"),
        ("pod deleted -> registered", "replace_registered", None, ""),
        ("release -> deleted, -T", "release_excess", None, ""),
    ]
    lines = [
        f"reaction ({result['trials']} trials, T {result['idle_timeout_s']:g} s)"
        f"{'p50 ms':>11}{'p99 ms':>9}   baseline p50 / p99 ms"
    ]
    for title, key, base, base_name in rows:
        ours = result[key]
        line = f"{title:<36}{ours['p50_ms']:>9.1f}{ours['p99_ms']:>9.1f}"
        if base is not None:
            theirs = result[base]
            line += f"   {base_name}: {theirs['p50_ms']:.1f} / {theirs['p99_ms']:.1f}"
        lines.append(line)
    return lines
