"""The same Flink job on the same cluster under Flink's OWN native resource manager and under
rmd, side by side (``make bench-flink``).

    python -m bench.flink_side_by_side [--name NAME] [--cluster-dir DIR]
                                       [--variants native,rmd,rmd-spare]

The job: ``rmd_dev/flink/job`` (endless, rate-limited) at parallelism 4, 2 slots per
TaskManager (so 2 TaskManager pods), ``resourcemanager.taskmanager-timeout`` T = 10 s, the
default scheduler, a fixed-delay restart strategy. Variants, each with its own cluster id in
one namespace of one local control plane, one after the other:

- ``native``: Flink 2.3.0's ``KubernetesSessionClusterEntrypoint`` (:mod:`rmd_dev.flink.native`);
- ``rmd``: Flink's standalone JobManager + ``rmd daemon`` following its REST API
  (:class:`rmd_dev.flink.jobmanager.LocalJobManager`, as the real-Flink tests run it);
- ``rmd-spare``: the same with ``slotmanager.redundant-taskmanager-num: 1`` (one warm spare
  TaskManager while a job runs).

Scenarios, in this order, for each: (a) submit → every task RUNNING, pods created and wasted
(created but never listed by Flink's ``/taskmanagers``); (b) cancel → the pods released
(seconds after the cancel; T stated); (a') a second submit on an empty cluster; (c) a
TaskManager pod deleted (``kubectl delete pod``, grace 30 s) → the job RUNNING again (it
restarted: the job's own RESTARTING timestamp moved; the ``numRestarts`` metric, read before
run 9, lags up to Flink's 10 s metric-fetch interval), pods created meanwhile; (d) the
JobManager pod SIGKILLed (Flink's JobManager, and with rmd the daemon beside it) and started
again at once, the job resubmitted (no HA: the new JobManager knows no job) → RUNNING, peak
pods alive, pods created.

Pods are counted by an independent watch (:class:`bench.scale_out.PodCensus`); Flink's
``/taskmanagers`` is polled every 0.5 s for which pods ever registered. The TaskManagers run
as real JVMs under the node emulator. Prints a table and writes
``bench/results/<name>.json`` with the machine's facts (load average!).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client, config

from bench.__main__ import RESULTS, fresh_namespace
from bench.machine import busy_processes, machine_facts
from bench.procstat import TreeCpu
from bench.scale_out import PodCensus, census
from rmd_dev.cluster import ControlPlane
from rmd_dev.flink import jobmanager as local
from rmd_dev.flink.jobjar import compile_rate_job
from rmd_dev.flink.native import NativeSessionCluster
from rmd_dev.interrupt import SIGTERM_EXIT_CODE, run_cancellable
from rmd_dev.provision import (
    DEFAULT_FLINK_VERSION,
    FlinkInstall,
    PhaseLog,
    cache_root,
    provision_flink,
)

PARALLELISM = 4
SLOTS_PER_TASKMANAGER = 2
IDLE_TIMEOUT = 10.0  # T
JVM_DEADLINE = 300.0  # a busy 2-core machine
SETTLE = 5.0  # after RUNNING again: pods a resource manager creates late still count
VARIANTS = ("native", "rmd", "rmd-spare")
TIMEOUT = (5, 30)

SHARED_FLINK_KEYS = {  # both resource managers' JobManagers
    "taskmanager.numberOfTaskSlots": str(SLOTS_PER_TASKMANAGER),
    "resourcemanager.taskmanager-timeout": f"{IDLE_TIMEOUT:.0f} s",
    "restart-strategy.fixed-delay.attempts": "1000",
    # After a JobManager restart, TaskManager pods of the previous attempt count as supply
    # for this long (Flink's default 0 s: new pods at once, the old ones come back later).
    "resourcemanager.previous-worker.recovery.timeout": "60 s",
}


# ---------------------------------------------------------------------------- the two setups


class Cluster(Protocol):
    """A JobManager pod under one resource manager, as the scenarios drive it."""

    rest: local.FlinkRest

    async def start(self) -> None: ...
    async def kill(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class NativeCluster:
    native: NativeSessionCluster
    rest: local.FlinkRest

    async def start(self) -> None:
        await self.native.start()
        await self.native.wait_answering(self.rest, timeout=JVM_DEADLINE)

    async def kill(self) -> None:
        await self.native.kill()

    async def stop(self) -> None:
        await self.native.stop()


@dataclass
class RmdCluster:
    """Flink's standalone JobManager and ``rmd daemon`` following it."""

    jobmanager: local.LocalJobManager
    rest: local.FlinkRest
    api: client.ApiClient
    namespace: str
    cluster_id: str

    async def start(self) -> None:
        await self.jobmanager.start()
        await _until(self._ready, what="rmd following Flink", timeout=JVM_DEADLINE)

    async def _ready(self) -> bool:
        if exited := self.jobmanager.exited():
            raise RuntimeError(f"exited while starting: {exited}")
        try:
            async with self.rest.http.get(f"{self.jobmanager.daemon_url}/readyz") as response:
                body = await response.json(content_type=None)
                return response.status == 200 and body["flink"]["state"] == "following"
        except (aiohttp.ClientError, TimeoutError, KeyError, TypeError):
            return False

    async def kill(self) -> None:
        for name in ("jobmanager", "daemon"):
            await local.kill_group(self.jobmanager.processes[name])

    async def stop(self) -> None:
        await self.jobmanager.stop("daemon")
        await local.delete_taskmanager_pods(
            self.api, namespace=self.namespace, cluster_id=self.cluster_id
        )
        await self.jobmanager.stop("jobmanager")
        with contextlib.suppress(client.ApiException):
            await client.AppsV1Api(self.api).delete_namespaced_deployment(
                self.cluster_id, self.namespace, _request_timeout=TIMEOUT
            )


@contextlib.asynccontextmanager
async def setup(
    variant: str,
    *,
    flink: FlinkInstall,
    api: client.ApiClient,
    http: aiohttp.ClientSession,
    kubeconfig: Path,
    namespace: str,
    work_dir: Path,
) -> AsyncIterator[Cluster]:
    cluster_id = f"flink-{variant}"
    cluster: Cluster
    if variant == "native":
        native = NativeSessionCluster(
            flink=flink,
            api=api,
            kubeconfig=kubeconfig,
            namespace=namespace,
            cluster_id=cluster_id,
            work_dir=work_dir,
        )
        await native.create(extra=SHARED_FLINK_KEYS)
        cluster = NativeCluster(native, local.FlinkRest(http, native.rest_url))
    else:
        ports = local.JobManagerPorts.free()
        jobmanager = local.LocalJobManager(
            flink=flink, work_dir=work_dir, kubeconfig=kubeconfig, ports=ports
        )
        values = local.jobmanager_configuration(
            flink=flink,
            cluster_id=cluster_id,
            namespace=namespace,
            work_dir=work_dir,
            ports=ports,
            extra={
                **SHARED_FLINK_KEYS,
                "slotmanager.redundant-taskmanager-num": "1" if variant == "rmd-spare" else "0",
            },
        )
        local.write_conf_dir(jobmanager.conf_dir, flink=flink, values=values)
        body: Any = local.jobmanager_deployment_manifest(cluster_id, namespace=namespace)
        await client.AppsV1Api(api).create_namespaced_deployment(
            namespace, body=body, _request_timeout=TIMEOUT
        )
        cluster = RmdCluster(
            jobmanager, local.FlinkRest(http, jobmanager.rest_url), api, namespace, cluster_id
        )
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


# ---------------------------------------------------------------------------- measuring


@dataclass
class Registrations:
    """Which pods Flink's ``/taskmanagers`` ever listed (polled every 0.5 s)."""

    rest: local.FlinkRest
    ever: set[str] = field(default_factory=set)
    first_listed: dict[str, float] = field(default_factory=dict)  # time.perf_counter()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, local.FlinkRestError):
                listed = set(await self.rest.taskmanager_ids())
                now = time.perf_counter()
                for name in listed - self.ever:
                    self.first_listed[name] = now
                self.ever |= listed
            await asyncio.sleep(0.5)


async def _until(check: Callable[[], Awaitable[bool]], *, what: str, timeout: float) -> float:
    """Poll ``check`` every 0.25 s until true; the ``time.perf_counter()`` it held."""
    deadline = time.perf_counter() + timeout
    while not await check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.25)
    return time.perf_counter()


async def _all_running(rest: local.FlinkRest, job_id: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, local.FlinkRestError):
        job = await rest.job(job_id)
        return local.task_states(job).get("RUNNING", 0) == local.task_total(job) > 0
    return False


@dataclass
class Window:
    """What the census and Flink saw between two moments."""

    created: list[str]
    wasted: list[str]  # created, never listed by Flink
    peak: int


def _window(watch: PodCensus, registrations: Registrations, *, before: set[str]) -> Window:
    created = sorted(watch.seen - before)
    wasted = [name for name in created if name not in registrations.ever]
    return Window(created=created, wasted=wasted, peak=watch.peak)


@dataclass
class Figures:
    variant: str
    submit_to_running_s: list[float] = field(default_factory=list)
    submit_pods_created: list[int] = field(default_factory=list)
    submit_pods_wasted: list[int] = field(default_factory=list)
    # (a): each new pod, first seen by the census → first listed by Flink (±0.5 s polls)
    pod_to_registered_s: list[float] = field(default_factory=list)
    # (a): CPU seconds from submit to RUNNING by kind of process (bench.procstat.TreeCpu;
    # "machine" is everything not started by this bench) and the load average at RUNNING
    submit_cpu_s: list[dict[str, float]] = field(default_factory=list)
    submit_load_average: list[list[float]] = field(default_factory=list)
    cancel_to_released_s: float | None = None  # the last pod's deletion started
    delete_to_running_s: float | None = None
    delete_pods_created: int | None = None
    delete_pods_wasted: int | None = None
    kill_to_running_s: float | None = None
    kill_peak_pods: int | None = None
    kill_pods_created: int | None = None
    kill_pods_wasted: int | None = None
    # The pods each scenario created, by name; "wasted" is judged at the end of the variant
    # (a warm spare still starting when a scenario's window closes is no waste).
    created: dict[str, list[str]] = field(default_factory=dict)
    pods_total: int = 0
    notes: list[str] = field(default_factory=list)


async def scenarios(
    cluster: Cluster,
    figures: Figures,
    *,
    watch: PodCensus,
    registrations: Registrations,
    jar: Path,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    rest = cluster.rest

    async def submit() -> str:
        before = set(watch.seen)
        watch.reset_peak()
        jar_id = await rest.upload_jar(jar)
        meter = TreeCpu(root=os.getpid())
        meter.start()
        started = time.perf_counter()
        job_id = await rest.submit(jar_id, parallelism=PARALLELISM)
        sampler = asyncio.create_task(_sampling(meter))
        try:
            done = await _until(
                lambda: _all_running(rest, job_id), what="all tasks RUNNING", timeout=JVM_DEADLINE
            )
        finally:
            sampler.cancel()
        cpu = meter.stop()
        figures.submit_cpu_s.append(cpu)
        figures.submit_load_average.append([round(v, 2) for v in os.getloadavg()])
        await asyncio.sleep(SETTLE)
        window = _window(watch, registrations, before=before)
        figures.submit_to_running_s.append(round(done - started, 1))
        figures.submit_pods_created.append(len(window.created))
        figures.created[f"submit-{len(figures.submit_pods_created)}"] = window.created
        figures.pod_to_registered_s += [
            round(registrations.first_listed[name] - watch.added_at[name], 1)
            for name in window.created
            if name in registrations.first_listed
        ]
        print(f"  submit → RUNNING {done - started:.1f} s, pods {window.created}", flush=True)
        print(f"    CPU s meanwhile: {cpu}", flush=True)
        return job_id

    # (a) and (b)
    job_id = await submit()
    live = set(watch.alive)
    cancelled = time.perf_counter()
    await rest.cancel(job_id)
    await _until(
        _true_when(lambda: not watch.alive & live),
        what="every pod released after the cancel",
        timeout=IDLE_TIMEOUT * 3 + 60,
    )
    figures.cancel_to_released_s = round(max(watch.deleting[n] for n in live) - cancelled, 1)
    print(f"  cancel → released {figures.cancel_to_released_s} s (T {IDLE_TIMEOUT:g} s)")
    await _until(_true_when(lambda: not watch.alive), what="no pod left", timeout=60)

    # (a') and (c)
    job_id = await submit()
    restarted = await rest.last_restart(job_id)
    placement = await rest.task_placement(job_id)  # not an idle warm spare
    victim = sorted(watch.alive & placement.keys())[0]
    before = set(watch.seen)
    watch.reset_peak()
    deleted = time.perf_counter()
    await core.delete_namespaced_pod(victim, namespace, _request_timeout=TIMEOUT)

    async def recovered() -> bool:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, local.FlinkRestError):
            return await rest.last_restart(job_id) > restarted and await _all_running(rest, job_id)
        return False

    done = await _until(recovered, what="RUNNING again after the delete", timeout=JVM_DEADLINE)
    await asyncio.sleep(SETTLE)
    window = _window(watch, registrations, before=before)
    figures.delete_to_running_s = round(done - deleted, 1)
    figures.delete_pods_created = len(window.created)
    figures.created["delete"] = window.created
    print(f"  delete {victim} → RUNNING {done - deleted:.1f} s, created {window.created}")

    # (d)
    before = set(watch.seen)
    watch.reset_peak()
    killed = time.perf_counter()
    await cluster.kill()
    await cluster.start()
    jar_id = await rest.upload_jar(jar)
    job_id = await rest.submit(jar_id, parallelism=PARALLELISM)
    done = await _until(
        lambda: _all_running(rest, job_id), what="resubmitted job RUNNING", timeout=JVM_DEADLINE
    )
    # Pods of the old JobManager may re-register or go later: watch one more idle timeout
    # past Flink's heartbeat timeout (50 s) for what the peak becomes.
    await asyncio.sleep(SETTLE)
    window = _window(watch, registrations, before=before)
    figures.kill_to_running_s = round(done - killed, 1)
    figures.kill_pods_created = len(window.created)
    try:
        await _until(
            _true_when(lambda: len(watch.alive) <= _steady_pods(figures.variant)),
            what="back to the steady pod count",
            timeout=50 + IDLE_TIMEOUT * 3 + 60,
        )
    except TimeoutError as error:
        figures.notes.append(f"(d): {error}; {len(watch.alive)} pods alive")
    window = _window(watch, registrations, before=before)
    figures.kill_peak_pods = window.peak
    figures.created["kill"] = window.created
    print(
        f"  JobManager kill → RUNNING {done - killed:.1f} s, peak {window.peak} pods, "
        f"created {window.created}",
        flush=True,
    )
    with contextlib.suppress(aiohttp.ClientError, local.FlinkRestError):
        await rest.cancel(job_id)
    figures.pods_total = len(watch.seen)

    def wasted(key: str) -> int:
        return len([name for name in figures.created[key] if name not in registrations.ever])

    figures.submit_pods_wasted = [wasted("submit-1"), wasted("submit-2")]
    figures.delete_pods_wasted = wasted("delete")
    figures.kill_pods_wasted = wasted("kill")


async def _sampling(meter: TreeCpu) -> None:
    while True:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(meter.sample)


def _steady_pods(variant: str) -> int:
    needed = PARALLELISM // SLOTS_PER_TASKMANAGER
    return needed + (1 if variant == "rmd-spare" else 0)


def _true_when(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


# ---------------------------------------------------------------------------- the run


async def run(variants: Sequence[str], *, cluster_dir: Path | None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": machine_facts(),
        "busy_before": await asyncio.to_thread(busy_processes),
        "job": {
            "parallelism": PARALLELISM,
            "slots_per_taskmanager": SLOTS_PER_TASKMANAGER,
            "taskmanager_timeout_s": IDLE_TIMEOUT,
            "flink": DEFAULT_FLINK_VERSION,
        },
        "variants": [],
    }
    log = PhaseLog(log_path=cache_root() / "provision.log")
    flink = await asyncio.to_thread(provision_flink, log=log)
    jar = await asyncio.to_thread(compile_rate_job, flink)
    own = cluster_dir is None
    directory = cluster_dir or Path(tempfile.mkdtemp(prefix="rmd-bench-flink-"))
    plane = ControlPlane(directory)
    state = await asyncio.to_thread(plane.up, nodes=2) if own else plane.status()
    if state is None:
        raise SystemExit(f"no cluster in {directory}")
    work = Path(tempfile.mkdtemp(prefix="rmd-bench-flink-work-"))
    print(f"logs in {work}", flush=True)
    try:
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=state.kubeconfig, client_configuration=configuration
        )
        async with (
            client.ApiClient(configuration) as api,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            core = client.CoreV1Api(api)
            namespace = await fresh_namespace(core)
            for variant in variants:
                print(f"{variant}:", flush=True)
                figures = Figures(variant=variant)
                async with (
                    setup(
                        variant,
                        flink=flink,
                        api=api,
                        http=http,
                        kubeconfig=Path(state.kubeconfig),
                        namespace=namespace,
                        work_dir=work / variant,
                    ) as cluster,
                    census(core, namespace, f"flink-{variant}") as watch,
                ):
                    registrations = Registrations(cluster.rest)
                    poller = asyncio.create_task(registrations.run())
                    try:
                        await scenarios(
                            cluster,
                            figures,
                            watch=watch,
                            registrations=registrations,
                            jar=jar,
                            core=core,
                            namespace=namespace,
                        )
                    finally:
                        poller.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await poller
                report["variants"].append(asdict(figures))
            with contextlib.suppress(client.ApiException):
                await core.delete_namespace(namespace, _request_timeout=TIMEOUT)
    finally:
        if own:
            await asyncio.to_thread(plane.down)
    report["machine_after"] = {"load_average": [round(v, 2) for v in os.getloadavg()]}
    report["busy_after"] = await asyncio.to_thread(busy_processes)
    return report


LABELS = {"native": "Flink native", "rmd": "rmd", "rmd-spare": "rmd + 1 warm spare"}


def table(report: dict[str, Any]) -> str:
    machine = report["machine"]
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("(a) submit → all RUNNING, s", lambda f: " / ".join(map(str, f["submit_to_running_s"]))),
        (
            "(a) pods created (wasted)",
            lambda f: " / ".join(
                f"{c} ({w})"
                for c, w in zip(f["submit_pods_created"], f["submit_pods_wasted"], strict=True)
            ),
        ),
        (
            "(a) pod created → listed by Flink, s",
            lambda f: _span(f.get("pod_to_registered_s", [])),
        ),
        *[
            (f"(a) CPU s, {kind}", _cpu_cell(kind))
            for kind in ("taskmanager JVMs", "agents", "daemon", "jobmanager JVM", "machine")
        ],
        (
            f"(b) cancel → released, s (T {IDLE_TIMEOUT:g} s)",
            lambda f: str(f["cancel_to_released_s"]),
        ),
        ("(c) pod deleted → RUNNING, s", lambda f: str(f["delete_to_running_s"])),
        (
            "(c) pods created (wasted)",
            lambda f: f"{f['delete_pods_created']} ({f['delete_pods_wasted']})",
        ),
        ("(d) JobManager kill → RUNNING, s", lambda f: str(f["kill_to_running_s"])),
        ("(d) peak pods alive", lambda f: str(f["kill_peak_pods"])),
        (
            "(d) pods created (wasted)",
            lambda f: f"{f['kill_pods_created']} ({f['kill_pods_wasted']})",
        ),
    ]
    variants = report["variants"]
    width = 22
    lines = [
        f"Flink {report['job']['flink']}, parallelism {PARALLELISM}, {SLOTS_PER_TASKMANAGER} slots "
        f"per TaskManager (2 pods needed), T = {IDLE_TIMEOUT:g} s; {machine['cpus']} CPUs, load "
        f"average {machine['load_average']} at the start, "
        f"{report['machine_after']['load_average']} at the end",
        "",
        f"{'':<40}" + "".join(f"{LABELS[v['variant']]:>{width}}" for v in variants),
    ]
    for label, cell in rows:
        lines.append(f"{label:<40}" + "".join(f"{cell(v):>{width}}" for v in variants))
    return "\n".join(lines)


def _cpu_cell(kind: str) -> Callable[[dict[str, Any]], str]:
    def cell(figures: dict[str, Any]) -> str:
        return " / ".join(f"{cpu.get(kind, 0.0):.1f}" for cpu in figures.get("submit_cpu_s", []))

    return cell


def _span(values: Sequence[float]) -> str:
    return f"{min(values)} to {max(values)}" if values else "-"


def _variants(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"--variants {text!r}: choose from {', '.join(VARIANTS)} (comma-separated)"
        )
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flink_side_by_side", description=__doc__)
    parser.add_argument("--name", help="results file name (default: flink-<time>)")
    parser.add_argument("--cluster-dir", type=Path, help="use a running dev cluster")
    parser.add_argument("--variants", type=_variants, default=VARIANTS)
    args = parser.parse_args(argv)
    name = args.name or f"flink-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    report = run_cancellable(run(args.variants, cluster_dir=args.cluster_dir))
    if report is None:
        return SIGTERM_EXIT_CODE
    print()
    print(table(report))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
