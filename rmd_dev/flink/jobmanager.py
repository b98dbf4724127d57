"""A JobManager pod played by local processes: Flink's JobManager and ``rmd daemon`` beside it.

On a real cluster both run in the JobManager pod; on the local control plane they run here,
with one configuration directory (``config.yaml`` + Flink's console logging files), loopback
addresses and free ports. The daemon follows Flink's REST API (``rmd.flink.rest-url``), so a
job submitted to Flink is the demand rmd serves. TaskManager pods run real Flink
TaskManagers under the node emulator (``kubernetes.entry.path`` = ``$FLINK_ENTRYPOINT``).

:class:`LocalJobManager` starts and stops the two processes (each in its own process group,
SIGTERM then SIGKILL after a grace period); :class:`FlinkRest` is the little of Flink's REST
API the demo uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from rmd.config.files import parse_config_yaml
from rmd.kube.flinkconfigmap import render_config_yaml
from rmd_dev.cluster import free_port
from rmd_dev.provision import FlinkInstall

STOP_GRACE = 20.0


@dataclass(frozen=True)
class JobManagerPorts:
    rpc: int
    blob: int
    rest: int
    daemon: int

    @classmethod
    def free(cls) -> JobManagerPorts:
        return cls(rpc=free_port(), blob=free_port(), rest=free_port(), daemon=free_port())


def jobmanager_configuration(
    *,
    flink: FlinkInstall,
    cluster_id: str,
    namespace: str,
    work_dir: Path,
    ports: JobManagerPorts,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """The JobManager pod's config.yaml: Flink's stock JVM options, small memory, loopback
    addresses, free ports, a fixed-delay restart strategy, a short job-view cache, rmd
    following this JobManager,
    and rmd's keys for TaskManager pods that run real Flink under the node emulator;
    ``extra`` wins."""
    stock = parse_config_yaml((flink.home / "conf" / "config.yaml").read_text())
    values = {
        "env.java.opts.all": stock.get("env.java.opts.all", ""),
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.rpc.port": str(ports.rpc),
        "blob.server.port": str(ports.blob),
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": str(ports.rest),
        "jobmanager.memory.process.size": "1g",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "10",
        "restart-strategy.fixed-delay.delay": "1 s",
        # Flink's REST API serves a job's view from a cache (default: web.refresh-interval,
        # 3 s); a job read while it initializes (no vertices yet) would hide its demand from
        # rmd's follower that long.
        "rest.cache.execution-graph.timeout": "500 ms",
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
        "rmd.rest.port": str(ports.daemon),
        "rmd.taskmanager.resourcemanager-url": f"http://127.0.0.1:{ports.daemon}",
        "rmd.taskmanager.agent-command": f"{sys.executable};-m;rmd;taskmanager",
        "rmd.taskmanager.supervise-flink": "true",
        "rmd.flink.rest-url": f"http://127.0.0.1:{ports.rest}",
    }
    values.update(extra)
    return values


def write_conf_dir(conf_dir: Path, *, flink: FlinkInstall, values: Mapping[str, str]) -> None:
    """config.yaml and Flink's console logging files, as the JobManager pod has them."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name in ("log4j-console.properties", "logback-console.xml"):
        shutil.copy(flink.home / "conf" / name, conf_dir / name)
    (conf_dir / "config.yaml").write_text(render_config_yaml(values))


def jobmanager_deployment_manifest(name: str, *, namespace: str) -> dict[str, Any]:
    """The JobManager Deployment with no replicas (its processes run here): the owner of
    every TaskManager pod and of the flink-config ConfigMap, as on a real cluster."""
    labels = {"app": name, "component": "jobmanager"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "flink-main-container", "image": "flink"}]},
            },
        },
    }


@dataclass
class LocalJobManager:
    """Flink's JobManager and the rmd daemon as processes; logs in ``work_dir/<name>.log``."""

    flink: FlinkInstall
    work_dir: Path
    kubeconfig: Path
    ports: JobManagerPorts
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    @property
    def conf_dir(self) -> Path:
        return self.work_dir / "conf"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.rest}"

    @property
    def daemon_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.daemon}"

    def log_path(self, name: str) -> Path:
        return self.work_dir / f"{name}.log"

    async def start(self) -> None:
        """Start both; the configuration must have been written to :attr:`conf_dir`."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "FLINK_HOME": str(self.flink.home),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.work_dir / "jobmanager-logs"),
            "FLINK_PID_DIR": str(self.work_dir / "pids"),
        }
        self.processes["jobmanager"] = await self._start(
            "jobmanager", [str(self.flink.entrypoint), "jobmanager"], env=env
        )
        self.processes["daemon"] = await self._start(
            "daemon",
            [
                sys.executable,
                "-m",
                "rmd",
                "daemon",
                "--conf-dir",
                str(self.conf_dir),
                "--kubeconfig",
                str(self.kubeconfig),
            ],
            env=env,
        )

    def exited(self) -> list[str]:
        """Which of the processes have ended, with their exit codes."""
        return [
            f"{name} (exit code {process.returncode}, log {self.log_path(name)})"
            for name, process in self.processes.items()
            if process.returncode is not None
        ]

    async def stop(self, name: str) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period; reaped."""
        process = self.processes.get(name)
        if process is not None:
            await stop_group(process)

    async def _start(
        self, name: str, argv: list[str], *, env: Mapping[str, str]
    ) -> asyncio.subprocess.Process:
        return await spawn(argv, env=env, log_path=self.log_path(name), cwd=self.work_dir)


async def spawn(
    argv: list[str], *, env: Mapping[str, str], log_path: Path, cwd: Path
) -> asyncio.subprocess.Process:
    """``argv`` in its own process group (session), output appended to ``log_path``."""
    with log_path.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )


async def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL to the process's group (a crash, no clean-up), reaped."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


async def stop_group(process: asyncio.subprocess.Process, *, grace: float = STOP_GRACE) -> None:
    """SIGTERM to the process's group, SIGKILL after ``grace``; reaped, and whatever it left
    in its group killed."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever it left in its group


TM_SELECTOR = "type=flink-native-kubernetes,component=taskmanager"


async def delete_taskmanager_pods(
    api: client.ApiClient, *, namespace: str, cluster_id: str, timeout: float = 60.0
) -> None:
    """Delete the cluster's TaskManager pods and wait (polling the API, a clean-up) until they
    are gone: the node emulator stops their processes (the TaskManager JVMs) first."""
    core = client.CoreV1Api(api)
    selector = f"{TM_SELECTOR},app={cluster_id}"
    await core.delete_collection_namespaced_pod(
        namespace, label_selector=selector, grace_period_seconds=10, _request_timeout=(5, 30)
    )
    try:
        async with asyncio.timeout(timeout):
            while True:
                listed = await core.list_namespaced_pod(
                    namespace, label_selector=selector, _request_timeout=(5, 30)
                )
                if not listed.items:
                    return
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise TimeoutError(
            f"TaskManager pods of {cluster_id} not gone within {timeout:g} s"
        ) from None


class FlinkRestError(RuntimeError):
    """Flink's REST API answered something other than what was asked for."""


@dataclass
class FlinkRest:
    """The part of Flink's REST API the demo uses."""

    http: aiohttp.ClientSession
    url: str

    async def get(self, path: str) -> Any:
        async with self.http.get(f"{self.url}{path}") as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise FlinkRestError(f"GET {path}: {response.status} {body}")
            return body

    async def upload_jar(self, jar: Path) -> str:
        """``POST /jars/upload``; the jar id for :meth:`submit`."""
        content = await asyncio.to_thread(jar.read_bytes)
        form = aiohttp.FormData()
        form.add_field(
            "jarfile", content, filename=jar.name, content_type="application/x-java-archive"
        )
        async with self.http.post(f"{self.url}/jars/upload", data=form) as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise FlinkRestError(f"POST /jars/upload: {response.status} {body}")
        return str(body["filename"]).rsplit("/", 1)[-1]

    async def submit(self, jar_id: str, *, parallelism: int, program_args: str = "") -> str:
        """``POST /jars/<id>/run?parallelism=N``; the Flink job id."""
        payload = {"programArgs": program_args} if program_args else {}
        async with self.http.post(
            f"{self.url}/jars/{jar_id}/run", params={"parallelism": str(parallelism)}, json=payload
        ) as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise FlinkRestError(f"POST /jars/{jar_id}/run: {response.status} {body}")
        return str(body["jobid"])

    async def cancel(self, job_id: str) -> None:
        async with self.http.patch(
            f"{self.url}/jobs/{job_id}", params={"mode": "cancel"}
        ) as response:
            if response.status != 202:
                raise FlinkRestError(f"cancel {job_id}: {response.status} {await response.text()}")

    async def taskmanager_ids(self) -> list[str]:
        body = await self.get("/taskmanagers")
        return sorted(str(tm["id"]) for tm in body["taskmanagers"])

    async def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.get(f"/jobs/{job_id}")
        return body

    async def last_restart(self, job_id: str) -> int:
        """When the job last switched to RESTARTING (epoch milliseconds; 0: never), from the
        job's own view (``timestamps``). Unlike the ``numRestarts`` metric, which Flink's
        metric fetcher refreshes only every ``metrics.fetcher.update-interval`` (10 s), it is
        as fresh as the job's view (``rest.cache.execution-graph.timeout``)."""
        job = await self.job(job_id)
        return int((job.get("timestamps") or {}).get("RESTARTING") or 0)

    async def task_placement(self, job_id: str) -> dict[str, int]:
        """How many of the job's running tasks each TaskManager (by id) holds."""
        job = await self.job(job_id)
        placement: dict[str, int] = {}
        for vertex in job["vertices"]:
            detail = await self.get(f"/jobs/{job_id}/vertices/{vertex['id']}")
            for subtask in detail.get("subtasks", []):
                if subtask.get("status") == "RUNNING":
                    where = str(subtask.get("taskmanager-id") or subtask.get("endpoint", "?"))
                    placement[where] = placement.get(where, 0) + 1
        return placement


def task_states(job: Mapping[str, Any]) -> dict[str, int]:
    """Task counts by state over all the job's vertices (states with no task left out)."""
    counts: dict[str, int] = {}
    for vertex in job["vertices"]:
        for state, count in vertex["tasks"].items():
            if int(count):
                counts[state] = counts.get(state, 0) + int(count)
    return counts


def task_total(job: Mapping[str, Any]) -> int:
    return sum(int(vertex["parallelism"]) for vertex in job["vertices"])
