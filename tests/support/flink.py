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
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import client

from rmd.config.files import parse_config_yaml
from rmd.kube.flinkconfigmap import render_config_yaml
from rmd_dev.cluster import free_port
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
STOP_GRACE = 20.0
TM_SELECTOR = "type=flink-native-kubernetes,component=taskmanager"
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

    # -- Flink's REST API

    async def get(self, path: str) -> Any:
        async with self.http.get(f"{self.rest_url}{path}") as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise AssertionError(f"GET {path}: {response.status} {body}")
            return body

    async def upload_jar(self, jar: Path) -> str:
        """``POST /jars/upload``; the jar id for :meth:`submit`."""
        content = await asyncio.to_thread(jar.read_bytes)
        form = aiohttp.FormData()
        form.add_field(
            "jarfile",
            content,
            filename=jar.name,
            content_type="application/x-java-archive",
        )
        async with self.http.post(f"{self.rest_url}/jars/upload", data=form) as response:
            body = await response.json(content_type=None)
            assert response.status == 200, body
        return str(body["filename"]).rsplit("/", 1)[-1]

    async def submit(self, jar_id: str, *, parallelism: int, program_args: str = "") -> str:
        """``POST /jars/<id>/run?parallelism=N``; the Flink job id."""
        payload = {"programArgs": program_args} if program_args else {}
        async with self.http.post(
            f"{self.rest_url}/jars/{jar_id}/run",
            params={"parallelism": str(parallelism)},
            json=payload,
        ) as response:
            body = await response.json(content_type=None)
            assert response.status == 200, body
        return str(body["jobid"])

    async def cancel(self, job_id: str) -> None:
        async with self.http.patch(
            f"{self.rest_url}/jobs/{job_id}", params={"mode": "cancel"}
        ) as response:
            assert response.status == 202, await response.text()

    async def taskmanager_ids(self) -> set[str]:
        body = await self.get("/taskmanagers")
        return {str(tm["id"]) for tm in body["taskmanagers"]}

    async def running_tasks(self, job_id: str) -> tuple[int, int]:
        """(tasks RUNNING, tasks in all) of the job, over all its vertices."""
        job = await self.get(f"/jobs/{job_id}")
        running = sum(int(v["tasks"].get("RUNNING", 0)) for v in job["vertices"])
        total = sum(int(v["parallelism"]) for v in job["vertices"])
        return running, total

    # -- rmd's HTTP API

    async def daemon_json(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.daemon_url}{path}", json=body) as response:
            answer = await response.json(content_type=None) if response.status != 204 else None
            assert 200 <= response.status < 300, f"{method} {path}: {response.status} {answer}"
            return answer

    def log(self, name: str) -> str:
        """The output of ``jobmanager`` or ``daemon`` so far (for failure messages)."""
        path = self.work_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def jobmanager_configuration(
    *,
    flink: FlinkInstall,
    cluster_id: str,
    namespace: str,
    work_dir: Path,
    ports: Mapping[str, int],
    scheduler: Scheduler,
    extra: Mapping[str, str],
    follow_flink: bool = False,
) -> dict[str, str]:
    """The shared config.yaml of the JobManager pod: Flink's stock JVM options, small memory,
    loopback addresses, free ports, the chosen scheduler, a fixed-delay restart strategy, and
    rmd's keys for TaskManager pods that run real Flink under the node emulator; with
    ``follow_flink``, ``rmd.flink.rest-url`` pointing at this JobManager's REST API."""
    stock = parse_config_yaml((flink.home / "conf" / "config.yaml").read_text())
    values = {
        "env.java.opts.all": stock.get("env.java.opts.all", ""),
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.rpc.port": str(ports["rpc"]),
        "blob.server.port": str(ports["blob"]),
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": str(ports["rest"]),
        "jobmanager.memory.process.size": "1g",
        "jobmanager.scheduler": scheduler,
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "1000",
        "restart-strategy.fixed-delay.delay": "1 s",
        "taskmanager.numberOfTaskSlots": "2",
        "taskmanager.memory.process.size": "1g",
        "kubernetes.cluster-id": cluster_id,
        "kubernetes.namespace": namespace,
        "kubernetes.container.image.ref": f"flink:{flink.version}",
        "kubernetes.taskmanager.cpu.amount": "0.5",
        "kubernetes.entry.path": str(flink.entrypoint),
        "kubernetes.flink.log.dir": str(work_dir / "taskmanager-logs"),
        "kubernetes.taskmanager.annotations": "emulator.rmd.dev/run:process",
        "containerized.taskmanager.env.FLINK_HOME": str(flink.home),
        "containerized.taskmanager.env.FLINK_PID_DIR": str(work_dir / "taskmanager-pids"),
        "rmd.rest.address": "127.0.0.1",
        "rmd.rest.port": str(ports["daemon"]),
        "rmd.taskmanager.resourcemanager-url": f"http://127.0.0.1:{ports['daemon']}",
        "rmd.taskmanager.agent-command": f"{sys.executable};-m;rmd;taskmanager",
        "rmd.taskmanager.supervise-flink": "true",
        "rmd.kubernetes.resync-interval": "30 s",
    }
    if follow_flink:
        values["rmd.flink.rest-url"] = f"http://127.0.0.1:{ports['rest']}"
    values.update(extra)
    return values


def _write_conf_dir(conf_dir: Path, *, flink: FlinkInstall, values: Mapping[str, str]) -> None:
    """config.yaml and Flink's console logging files, as the JobManager pod has them."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name in ("log4j-console.properties", "logback-console.xml"):
        shutil.copy(flink.home / "conf" / name, conf_dir / name)
    (conf_dir / "config.yaml").write_text(render_config_yaml(values))


async def create_jobmanager_deployment(
    core_api: client.ApiClient, *, namespace: str, name: str
) -> None:
    """The JobManager Deployment (0 replicas: the JobManager runs here), owner of the pods
    and the ConfigMap, as in a real cluster."""
    labels = {"app": name, "component": "jobmanager"}
    body: Any = {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "flink-main-container", "image": "flink"}]},
            },
        },
    }
    await client.AppsV1Api(core_api).create_namespaced_deployment(
        namespace, body=body, _request_timeout=(5, 30)
    )


async def _start(
    name: str, argv: list[str], *, env: Mapping[str, str], work_dir: Path
) -> asyncio.subprocess.Process:
    with (work_dir / f"{name}.log").open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            cwd=work_dir,
        )


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to its process group, SIGKILL after the grace period; reaped."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever it left in its group


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
    conf_dir = work_dir / "conf"
    ports = {name: free_port() for name in ("rpc", "blob", "rest", "daemon")}
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
    await asyncio.to_thread(_write_conf_dir, conf_dir, flink=flink, values=values)
    await create_jobmanager_deployment(kube_api, namespace=namespace, name=cluster_id)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "FLINK_HOME": str(flink.home),
        "FLINK_CONF_DIR": str(conf_dir),
        "FLINK_LOG_DIR": str(work_dir / "jobmanager-logs"),
        "FLINK_PID_DIR": str(work_dir / "pids"),
    }
    timeout_connect = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout_connect) as http:
        manager = FlinkJobManager(
            flink=flink,
            cluster_id=cluster_id,
            namespace=namespace,
            conf_dir=conf_dir,
            work_dir=work_dir,
            rest_url=f"http://127.0.0.1:{ports['rest']}",
            daemon_url=f"http://127.0.0.1:{ports['daemon']}",
            http=http,
        )
        try:
            manager.processes["jobmanager"] = await _start(
                "jobmanager", [str(flink.entrypoint), "jobmanager"], env=env, work_dir=work_dir
            )
            manager.processes["daemon"] = await _start(
                "daemon",
                [
                    sys.executable,
                    "-m",
                    "rmd",
                    "daemon",
                    "--conf-dir",
                    str(conf_dir),
                    "--kubeconfig",
                    str(daemon_kubeconfig or kubeconfig),
                ],
                env=env,
                work_dir=work_dir,
            )
            await _wait_ready(manager, timeout=timeout)
            yield manager
        finally:
            daemon = manager.processes.get("daemon")
            if daemon is not None:
                await _stop(daemon)
            await _delete_taskmanager_pods(kube_api, namespace=namespace, cluster_id=cluster_id)
            jobmanager = manager.processes.get("jobmanager")
            if jobmanager is not None:
                await _stop(jobmanager)
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


async def _delete_taskmanager_pods(
    kube_api: client.ApiClient, *, namespace: str, cluster_id: str
) -> None:
    """Delete the cluster's TaskManager pods and wait until they are gone: the node emulator
    stops their processes (the TaskManager JVMs) before it removes them."""
    core = client.CoreV1Api(kube_api)
    selector = f"{TM_SELECTOR},app={cluster_id}"
    await core.delete_collection_namespaced_pod(
        namespace, label_selector=selector, grace_period_seconds=10, _request_timeout=(5, 30)
    )

    async def gone() -> bool:
        listed = await core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=(5, 30)
        )
        return not listed.items

    await eventually(gone, what=f"TaskManager pods of {cluster_id} gone", timeout=60, interval=0.5)
