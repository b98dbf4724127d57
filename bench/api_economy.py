"""API economy: what one TaskManager lifecycle costs kube-apiserver, by its own count
(``apiserver_request_total``, :mod:`bench.apiserver_requests`).

A lifecycle, driven through the real daemon's HTTP API as a JobMaster would: declare one
TaskManager's slots → the pod is created → its agent registers (the job fulfilled) → the
job is removed → after the idle timeout the daemon deletes the pod → the pod is gone (seen
by an independent watch). Between two readings taken when the API server is quiet, ``count``
lifecycles in a row; the baseline is a reading over a quiet interval of the same length with
the daemon running and nothing to do (what time alone costs: watch renewals, resyncs,
leases, the nodes' heartbeats).

The counts include the other clients' share of each lifecycle (the scheduler binds the pod,
the node emulator reports its status and deletes it for good once its containers stopped):
see :mod:`bench.apiserver_requests`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from bench.apiserver_requests import Counts, difference, of_resources, per_unit, quiet
from bench.reaction import WAIT, JobClient, driven_daemon
from bench.scale_out import SLOTS, PodCensus

RMD_REQUESTS = "rmd_kubernetes_api_request_duration_seconds"
# The rows that must stand still before a reading (leases move every few seconds: the
# nodes' heartbeats).
QUIET_ROWS = of_resources("pods", "configmaps", "events")


@dataclass
class EconomyResult:
    lifecycles: int
    seconds: float
    per_lifecycle: dict[str, float]  # "VERB resource" → requests per lifecycle
    rmd_per_lifecycle: dict[str, float]  # the daemon's own count, by verb (its pod requests)
    quiet_same_length: dict[str, float]  # the baseline: requests over as long, doing nothing


async def lifecycles(job: JobClient, watcher: PodCensus, *, count: int, slots: int = SLOTS) -> None:
    """``count`` TaskManager lifecycles, one after the other (see the module)."""
    for _ in range(count):
        before = set(watcher.seen)
        await job.declare(slots)
        await job.fulfilled()
        new = watcher.seen - before
        await job.remove()
        await watcher.until(
            lambda: bool(new) and new <= watcher.gone,  # noqa: B023 (awaited here)
            timeout=WAIT,
            what="the released pod gone",
        )


async def rmd_requests(http: aiohttp.ClientSession, url: str) -> Counter[str]:
    """The daemon's own count of its Kubernetes requests by verb (create, delete, patch: the
    pod gateway's attempts; list: the pod watch's LISTs), from its ``/metrics``: which share
    of the API server's count is rmd's."""
    async with http.get(f"{url}/metrics") as answer:
        answer.raise_for_status()
        text = await answer.text()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{RMD_REQUESTS}_count":
                counts[sample.labels["verb"]] += int(sample.value)
    return counts


async def lifecycle_counts(
    api: client.ApiClient, job: JobClient, watcher: PodCensus, *, count: int
) -> tuple[Counts, float]:
    """The API server's count over ``count`` lifecycles (from quiet to quiet) and its length."""
    before = await quiet(api, kinds=QUIET_ROWS)
    began = time.monotonic()
    await lifecycles(job, watcher, count=count)
    after = await quiet(api, kinds=QUIET_ROWS)
    return difference(after, before), time.monotonic() - began


async def economy(
    api: client.ApiClient,
    *,
    kubeconfig: Path,
    namespace: str,
    count: int,
    log_dir: Path,
    idle_timeout: float = 2.0,
    daemon_tree: Path | None = None,
) -> EconomyResult:
    core = client.CoreV1Api(api)
    # Heartbeats every second, so that a lifecycle holds several: none may cost a request.
    options = {
        "heartbeat.interval": "1 s",
        "resourcemanager.taskmanager-timeout": f"{idle_timeout:g} s",
    }
    async with driven_daemon(
        core,
        kubeconfig=kubeconfig,
        namespace=namespace,
        name="economy",
        job_id="economy",
        log_dir=log_dir,
        daemon_tree=daemon_tree,
        options=options,
    ) as driven:
        ours = await rmd_requests(driven.http, driven.daemon.url)
        counts, seconds = await lifecycle_counts(api, driven.job, driven.watcher, count=count)
        ours = await rmd_requests(driven.http, driven.daemon.url) - ours
        before = await quiet(api, kinds=QUIET_ROWS)
        await asyncio.sleep(seconds)  # the baseline: as long, with nothing to do
        idle = difference(await quiet(api, kinds=QUIET_ROWS), before)
    return EconomyResult(
        lifecycles=count,
        seconds=round(seconds, 1),
        per_lifecycle=per_unit(counts, count),
        rmd_per_lifecycle={verb: round(ours[verb] / count, 2) for verb in sorted(ours)},
        quiet_same_length=per_unit(idle, 1),
    )


def economy_lines(result: dict[str, Any]) -> list[str]:
    """The table's API economy rows, from :class:`EconomyResult` as JSON: every row with at
    least one request per two lifecycles; the rest (the control plane's own periodic work,
    watches of its informers that ended) summed as one."""
    per, idle = result["per_lifecycle"], result["quiet_same_length"]
    lines = [
        f"kube-apiserver requests per TaskManager lifecycle ({result['lifecycles']} in "
        f"{result['seconds']:g} s; all clients){'':>4}per lifecycle   quiet, as long"
    ]
    rest_per = rest_idle = 0.0
    for kind in sorted(set(per) | set(idle)):
        if per.get(kind, 0) >= 0.5:
            lines.append(f"  {kind:<60}{per[kind]:>10.2f}{idle.get(kind, 0):>14.0f}")
        else:
            rest_per += per.get(kind, 0)
            rest_idle += idle.get(kind, 0)
    lines.append(f"  {'every other row':<60}{rest_per:>10.2f}{rest_idle:>14.0f}")
    own = ", ".join(f"{verb} {value:g}" for verb, value in result["rmd_per_lifecycle"].items())
    lines.append(f"  of which rmd's pod requests (its own count): {own}")
    return lines
