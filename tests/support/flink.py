"""Real Apache Flink for the tests: a provisioned FLINK_HOME, a test job, and a JobManager pod
played by local processes.

- :func:`provision` gives a :class:`~rmd_dev.provision.FlinkInstall` through the same code
  path as ``rmd dev-cluster up --flink`` (cached in ``~/.cache/rmd/flink-<version>``).
- :func:`compile_rate_job` (from :mod:`rmd_dev.flink.jobjar`, shared with ``make demo``)
  compiles ``rmd_dev/flink/job`` (an endless rate-limited DataGeneratorSource → keyBy →
  DiscardingSink) once per source and Flink version, cached.
- :func:`flink_jobmanager` starts what a JobManager pod runs — Flink's standalone JobManager
  (``$FLINK_ENTRYPOINT jobmanager``) and ``rmd daemon`` — beside each other, with one
  configuration directory and free ports, waits for both with a deadline, and at the end
  stops them, deletes the TaskManager pods the daemon created, waits until they (and so their
  TaskManager JVMs) are gone, and checks that no process it started is left.
  :class:`FlinkJobManager` then uploads, submits and cancels jobs over Flink's REST API.

The TaskManager pods run under the node emulator of the test session's control plane: the
agent (``rmd taskmanager``) starts Flink's TaskManager through ``kubernetes.entry.path`` =
``$FLINK_ENTRYPOINT``, with the ``flink-config-<cluster-id>`` ConfigMap mounted at
``/opt/flink/conf`` (the default ``kubernetes.flink.conf.dir``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import client

from rmd_dev.flink import jobmanager as local
from rmd_dev.flink.jobjar import compile_rate_job as compile_rate_job  # re-exported
from rmd_dev.provision import (
    DEFAULT_FLINK_VERSION,
    FlinkInstall,
    PhaseLog,
    cache_root,
    provision_flink,
)
from tests.support.waiting import eventually

STARTUP_TIMEOUT = 120.0  # a JVM takes 10-17 s on an idle 2-core machine; much more when busy
TM_SELECTOR = local.TM_SELECTOR
Scheduler = Literal["default", "adaptive"]


def flink_version() -> str:
    """The Flink version the tests use: ``$RMD_TEST_FLINK_VERSION``, else the default."""
    return os.environ.get("RMD_TEST_FLINK_VERSION") or DEFAULT_FLINK_VERSION


def provision(version: str | None = None) -> FlinkInstall:
    """JDK + Flink, as ``rmd dev-cluster up --flink`` provisions them (cached)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    log = PhaseLog(log_path=root / "provision.log")
    return provision_flink(log=log, version=version or flink_version())


# ---------------------------------------------------------------------------- the JobManager


@dataclass
class FlinkJobManager:
    """Flink's JobManager and the rmd daemon beside it; talk to both over HTTP."""

    flink: FlinkInstall
    cluster_id: str
    namespace: str
    conf_dir: Path
    work_dir: Path
    rest_url: str  # Flink's REST API
    daemon_url: str  # rmd's HTTP API
    http: aiohttp.ClientSession
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    pod: local.LocalJobManager | None = None  # the processes' owner: for a restart
    rest: local.FlinkRest = field(init=False)

    def __post_init__(self) -> None:
        self.rest = local.FlinkRest(self.http, self.rest_url)

    # -- Flink's REST API (a wrong answer fails the test)

    async def get(self, path: str) -> Any:
        with _failing_the_test():
            return await self.rest.get(path)

    async def upload_jar(self, jar: Path) -> str:
        """``POST /jars/upload``; the jar id for :meth:`submit`."""
        with _failing_the_test():
            return await self.rest.upload_jar(jar)

    async def submit(self, jar_id: str, *, parallelism: int, program_args: str = "") -> str:
        """``POST /jars/<id>/run?parallelism=N``; the Flink job id."""
        with _failing_the_test():
            return await self.rest.submit(
                jar_id, parallelism=parallelism, program_args=program_args
            )

    async def cancel(self, job_id: str) -> None:
        with _failing_the_test():
            await self.rest.cancel(job_id)

    async def taskmanager_ids(self) -> set[str]:
        with _failing_the_test():
            return set(await self.rest.taskmanager_ids())

    async def running_tasks(self, job_id: str) -> tuple[int, int]:
        """(tasks RUNNING, tasks in all) of the job, over all its vertices."""
        with _failing_the_test():
            job = await self.rest.job(job_id)
        return local.task_states(job).get("RUNNING", 0), local.task_total(job)

    # -- rmd's HTTP API

    async def daemon_json(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.daemon_url}{path}", json=body) as response:
            answer = await response.json(content_type=None) if response.status != 204 else None
            assert 200 <= response.status < 300, f"{method} {path}: {response.status} {answer}"
            return answer

    async def crash_and_restart(self, *, timeout: float = STARTUP_TIMEOUT) -> None:
        """The JobManager pod crashes (SIGKILL to Flink's JobManager and the daemon) and
        starts again at once, same ports and configuration; back when both answer."""
        assert self.pod is not None
        for name in ("jobmanager", "daemon"):
            await local.kill_group(self.processes[name])
        await self.pod.start()
        await _wait_ready(self, timeout=timeout)

    def log(self, name: str) -> str:
        """The output of ``jobmanager`` or ``daemon`` so far (for failure messages)."""
        path = self.work_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def _failing_the_test() -> Iterator[None]:
    """Flink's REST API answering something else than asked for fails the test."""
    try:
        yield
    except local.FlinkRestError as error:
        raise AssertionError(str(error)) from error


def jobmanager_configuration(
    *,
    flink: FlinkInstall,
    cluster_id: str,
    namespace: str,
    work_dir: Path,
    ports: local.JobManagerPorts,
    scheduler: Scheduler,
    extra: Mapping[str, str],
    follow_flink: bool = False,
) -> dict[str, str]:
    """The demo's JobManager pod configuration (:func:`local.jobmanager_configuration`) with
    the chosen scheduler, 1000 restart attempts and a 30 s resync; ``rmd.flink.rest-url``
    pointing at this JobManager's REST API only with ``follow_flink``; ``extra`` wins."""
    values = local.jobmanager_configuration(
        flink=flink,
        cluster_id=cluster_id,
        namespace=namespace,
        work_dir=work_dir,
        ports=ports,
        extra={
            "jobmanager.scheduler": scheduler,
            "restart-strategy.fixed-delay.attempts": "1000",
            "rmd.kubernetes.resync-interval": "30 s",
        },
    )
    if not follow_flink:
        del values["rmd.flink.rest-url"]
    values.update(extra)
    return values


async def create_jobmanager_deployment(
    core_api: client.ApiClient, *, namespace: str, name: str
) -> None:
    """The JobManager Deployment (0 replicas: the JobManager runs here), owner of the pods
    and the ConfigMap, as in a real cluster."""
    body: Any = local.jobmanager_deployment_manifest(name, namespace=namespace)
    await client.AppsV1Api(core_api).create_namespaced_deployment(
        namespace, body=body, _request_timeout=(5, 30)
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.asynccontextmanager
async def flink_jobmanager(
    *,
    flink: FlinkInstall,
    kube_api: client.ApiClient,
    kubeconfig: Path,
    namespace: str,
    cluster_id: str,
    work_dir: Path,
    scheduler: Scheduler = "default",
    extra: Mapping[str, str] | None = None,
    daemon_kubeconfig: Path | None = None,
    timeout: float = STARTUP_TIMEOUT,
    follow_flink: bool = False,
) -> AsyncIterator[FlinkJobManager]:
    """A JobManager pod as local processes: Flink's JobManager and ``rmd daemon``.

    ``extra`` overrides configuration keys; ``follow_flink``: the daemon follows this
    JobManager's REST API (``rmd.flink.rest-url``); ``daemon_kubeconfig`` is the daemon's
    identity (default ``kubeconfig``, the admin one). The JobManager Deployment
    ``cluster_id`` is created first (``kubeconfig``'s identity) so pods and ConfigMap get
    their owner.
    """
    ports = local.JobManagerPorts.free()
    processes = local.LocalJobManager(
        flink=flink, work_dir=work_dir, kubeconfig=daemon_kubeconfig or kubeconfig, ports=ports
    )
    values = jobmanager_configuration(
        flink=flink,
        cluster_id=cluster_id,
        namespace=namespace,
        work_dir=work_dir,
        ports=ports,
        scheduler=scheduler,
        extra=extra or {},
        follow_flink=follow_flink,
    )
    await asyncio.to_thread(local.write_conf_dir, processes.conf_dir, flink=flink, values=values)
    await create_jobmanager_deployment(kube_api, namespace=namespace, name=cluster_id)
    timeout_connect = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout_connect) as http:
        manager = FlinkJobManager(
            flink=flink,
            cluster_id=cluster_id,
            namespace=namespace,
            conf_dir=processes.conf_dir,
            work_dir=work_dir,
            rest_url=processes.rest_url,
            daemon_url=processes.daemon_url,
            http=http,
            processes=processes.processes,
            pod=processes,
        )
        try:
            await processes.start()
            await _wait_ready(manager, timeout=timeout)
            yield manager
        finally:
            await processes.stop("daemon")
            await local.delete_taskmanager_pods(
                kube_api, namespace=namespace, cluster_id=cluster_id
            )
            await processes.stop("jobmanager")
            left = [name for name, p in manager.processes.items() if _group_alive(p.pid)]
            assert not left, f"processes left after the JobManager pod stopped: {left}"


async def _wait_ready(manager: FlinkJobManager, *, timeout: float) -> None:
    async def answers(url: str, name: str) -> bool:
        process = manager.processes[name]
        if process.returncode is not None:
            raise AssertionError(
                f"{name} exited with {process.returncode} while starting:\n{manager.log(name)}"
            )
        try:
            async with manager.http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    await eventually(
        lambda: answers(f"{manager.daemon_url}/readyz", "daemon"),
        what="rmd daemon /readyz",
        timeout=timeout,
        interval=0.2,
    )
    await eventually(
        lambda: answers(f"{manager.rest_url}/overview", "jobmanager"),
        what="Flink JobManager REST /overview",
        timeout=timeout,
        interval=0.5,
    )


# ---------------------------------------------------------------------------- test helpers


def following_keys(*, idle_timeout: float, **keys: str) -> dict[str, str]:
    """Configuration for a daemon that follows Flink: a 500 ms poll and the idle timeout,
    then ``keys``."""
    return {
        "rmd.flink.poll-interval": "500 ms",
        "resourcemanager.taskmanager-timeout": f"{idle_timeout:.0f} s",
        **keys,
    }


async def live_taskmanager_pods(
    core: client.CoreV1Api, *, namespace: str, cluster_id: str
) -> list[Any]:
    """The cluster's TaskManager pods that are not being deleted."""
    listed = await core.list_namespaced_pod(
        namespace,
        label_selector=f"{TM_SELECTOR},app={cluster_id}",
        _request_timeout=(5, 30),
    )
    return [pod for pod in listed.items if not pod.metadata.deletion_timestamp]


async def live_taskmanager_names(
    core: client.CoreV1Api, *, namespace: str, cluster_id: str
) -> set[str]:
    pods = await live_taskmanager_pods(core, namespace=namespace, cluster_id=cluster_id)
    return {pod.metadata.name for pod in pods}


async def rmd_jobs(jm: FlinkJobManager) -> dict[str, Any]:
    """rmd's jobs by id (``GET /v1/jobs``)."""
    body = await jm.daemon_json("GET", "/v1/jobs")
    return {job["job_id"]: job for job in body["jobs"]}


async def following_flink(jm: FlinkJobManager) -> bool:
    """Whether the daemon's /readyz says it follows Flink."""
    ready = await jm.daemon_json("GET", "/readyz")
    return bool(ready["flink"]["state"] == "following")


async def all_tasks_running(jm: FlinkJobManager, job_id: str) -> bool:
    running, total = await jm.running_tasks(job_id)
    return total > 0 and running == total


async def wait_all_tasks_running(
    jm: FlinkJobManager, job_id: str, *, what: str, timeout: float
) -> None:
    """Wait (polling every 0.5 s) until every task of the job is RUNNING."""
    await eventually(
        lambda: all_tasks_running(jm, job_id), what=what, timeout=timeout, interval=0.5
    )


def report_figures(title: str, figures: Mapping[str, float]) -> None:
    """The measured figures on stderr (``pytest -s`` shows them)."""
    report = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in figures.items())
    sys.stderr.write(f"\n{title}: {report}\n")


def assert_started_from_launch_plan(cluster_dir: Path, *, namespace: str, pods: set[str]) -> None:
    """Each pod's agent started the TaskManager's JVM from the daemon's launch plan: it says
    so, and Flink's ``flink-console.sh`` (which says "Starting ... as a console
    application") did not run (the node emulator keeps each container's log); it asked
    Flink once the TaskManager's log said it registered."""
    for name in sorted(pods):
        log = cluster_dir / "emulator" / "pods" / namespace / name / "flink-main-container.log"
        text = log.read_text(errors="replace")
        assert "agent.launch_plan_used" in text, f"{name}: {text[-3000:]}"
        assert "as a console application" not in text, f"{name}: {text[-3000:]}"
        # and, the JVM's log file on its command line, the agent asked Flink's JobManager
        # about it once that log said it had registered
        assert "agent.flink_taskmanager_registration_logged" in text, f"{name}: {text[-3000:]}"
