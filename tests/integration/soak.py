"""The soak (issue #12): the real ``rmd daemon`` process on a control plane of its own, driven
time-compressed — demand changes every ``--step`` seconds over three jobs, a TaskManager pod
killed every ``--kill-every`` seconds, agents registering and heartbeating — while the daemon's
RSS, open file descriptors and asyncio tasks (``rmd_asyncio_tasks``) are sampled every
``--sample`` seconds. Prints the samples, each series' slope per minute (least squares) and
the error-level lines of the daemon's log, and ends with the cluster converged to the last
demand.

    python -m tests.integration.soak [--minutes 20] [--summary-file F]     # make soak

``tests/integration/test_soak_smoke.py`` runs :func:`soak` for a few seconds in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes_asyncio import client

from bench.procstat import rss_bytes
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo
from tests.integration.daemon_harness import RunningDaemon, running_daemon
from tests.integration.fault_matrix import (
    SLOTS_PER_TASKMANAGER,
    cluster_namespace,
    dedicated_cluster,
)
from tests.support.waiting import eventually

JOBS = ("soak-a", "soak-b", "soak-c")
MAX_SLOTS_PER_JOB = 2 * SLOTS_PER_TASKMANAGER  # at most 6 pods at once on a 2-core machine


@dataclass(frozen=True)
class Sample:
    minute: float
    rss_mb: float
    open_fds: int
    asyncio_tasks: int


@dataclass
class SoakReport:
    minutes: float = 0.0
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)  # os.getloadavg() at the end
    samples: list[Sample] = field(default_factory=list)
    demand_changes: int = 0
    pods_killed: int = 0
    registrations: int = 0
    pods_created: int = 0
    error_lines: list[str] = field(default_factory=list)

    def slopes(self) -> dict[str, float]:
        """Per-minute least-squares slope of each sampled series, without the first sample
        (taken at the start, before any pod: the warm-up, not a trend)."""
        steady = self.samples[1:]
        return {
            "rss_mb_per_min": slope([(s.minute, s.rss_mb) for s in steady]),
            "open_fds_per_min": slope([(s.minute, s.open_fds) for s in steady]),
            "asyncio_tasks_per_min": slope([(s.minute, s.asyncio_tasks) for s in steady]),
        }

    def summary(self) -> str:
        load = " ".join(f"{value:.2f}" for value in self.load_average)
        lines = [
            f"soak of {self.minutes:g} min (python -m tests.integration.soak --minutes "
            f"{self.minutes:g}); load average at its end: {load}",
            "minute  rss_mb  open_fds  asyncio_tasks",
        ]
        lines += [
            f"{s.minute:6.1f}  {s.rss_mb:6.1f}  {s.open_fds:8d}  {s.asyncio_tasks:13d}"
            for s in self.samples
        ]
        lines.append("slopes: " + ", ".join(f"{k} {v:+.3f}" for k, v in self.slopes().items()))
        lines.append(
            f"{self.demand_changes} demand changes, {self.pods_killed} pods killed, "
            f"{self.pods_created} pods created, {self.registrations} registrations, "
            f"{len(self.error_lines)} error-level log lines"
        )
        lines += [f"  error: {line[:300]}" for line in self.error_lines]
        return "\n".join(lines)


def slope(points: Sequence[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def sample(daemon: RunningDaemon, *, minute: float) -> Sample:
    assert daemon.process is not None
    pid = daemon.process.pid
    return Sample(
        minute=round(minute, 2),
        rss_mb=rss_bytes(pid) / 2**20,
        open_fds=open_fds(pid),
        asyncio_tasks=int(await daemon.metric("rmd_asyncio_tasks")),
    )


def log_lines(path: Path) -> list[dict[str, object]]:
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


async def kill_one_pod(daemon: RunningDaemon, chance: random.Random) -> bool:
    live = sorted(await daemon.live_pod_names())
    if not live:
        return False
    await daemon.core.delete_namespaced_pod(
        chance.choice(live),
        daemon.namespace,
        grace_period_seconds=0,
        _request_timeout=REQUEST_TIMEOUT,
    )
    return True


async def soak(
    *,
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    seconds: float,
    sample_every: float = 60.0,
    step: float = 1.0,
    kill_every: float = 10.0,
    seed: int = 12,
) -> SoakReport:
    """Drive the daemon for ``seconds``; the samples and counts. Ends converged."""
    chance = random.Random(seed)
    report = SoakReport(minutes=seconds / 60)
    demand = dict.fromkeys(JOBS, 0)
    extra = {"resourcemanager.taskmanager-timeout": "2 s"}  # idle pods go, new ones come
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        extra=extra,
        as_process=True,
    ) as daemon:
        loop = asyncio.get_running_loop()
        started = loop.time()
        next_sample = started
        next_kill = started + kill_every
        while (now := loop.time()) < started + seconds:
            if now >= next_sample:
                report.samples.append(await sample(daemon, minute=(now - started) / 60))
                next_sample += sample_every
            if now >= next_kill and await kill_one_pod(daemon, chance):
                report.pods_killed += 1
                next_kill += kill_every
            job = chance.choice(JOBS)
            demand[job] = chance.randint(0, MAX_SLOTS_PER_JOB)
            await daemon.put_requirement(job, demand[job])
            report.demand_changes += 1
            # The pace of a compressed day of JobMasters: an interval being staged.
            await asyncio.sleep(step)
        report.samples.append(await sample(daemon, minute=(loop.time() - started) / 60))

        async def converged() -> bool:
            """Every job has its slots; every pod is a registered TaskManager holding at least
            one slot (idle ones are gone after the idle timeout). Not ``ceil(slots / 4)`` pods:
            slots freed by scale-downs and losses can leave jobs spread over more TaskManagers
            than perfect packing would need (rmd, like Flink, does not move allocated slots)."""
            for job, slots in demand.items():
                view = await daemon.get_json(f"/v1/jobs/{job}")
                if view["slots_allocated"] != slots:
                    return False
            busy = {
                tm["taskmanager_id"]
                for tm in await daemon.taskmanagers()
                if tm["state"] == "registered" and tm["slots_allocated"] > 0
            }
            wanted = sum(demand.values())
            live = await daemon.live_pod_names()
            return live == busy and len(live) <= wanted

        await eventually(converged, timeout=120, interval=0.5, what="the soak's last demand")
        report.pods_created = int(await daemon.metric("rmd_pods_created_total"))
        assert daemon.log_path is not None
        entries = log_lines(daemon.log_path)
        report.registrations = sum(1 for e in entries if e.get("event") == "taskmanager_registered")
        report.error_lines = [
            json.dumps(e) for e in entries if e.get("level") in ("error", "critical")
        ]
        assert daemon.process is not None
        assert daemon.process.returncode is None, "the daemon exited during the soak"
    report.load_average = os.getloadavg()
    return report


async def _main(*, minutes: float, sample_every: float) -> SoakReport:
    with dedicated_cluster() as info:
        async with cluster_namespace(info) as (api, namespace):
            return await soak(
                dev_cluster=info,
                kube_api=api,
                namespace=namespace,
                seconds=minutes * 60,
                sample_every=sample_every,
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.soak")
    parser.add_argument("--minutes", type=float, default=20.0, help="how long (default 20)")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    parser.add_argument(
        "--summary-file",
        type=Path,
        help="also write the summary here (make soak: docs/soak-summary.txt, which "
        "docs/RELIABILITY.md quotes)",
    )
    args = parser.parse_args(argv)
    report = asyncio.run(_main(minutes=args.minutes, sample_every=args.sample))
    print(report.summary())
    if args.summary_file is not None:
        args.summary_file.write_text(report.summary() + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
