"""``rmd session`` / ``rmd application`` as a user runs them, on the local cluster: the real
CLI as a subprocess, the configuration directory for the local cluster, and what a cluster
leaves behind, listed kind by kind."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client

from rmd_dev.flink.session_conf import session_configuration, write_session_conf_dir
from rmd_dev.provision import FlinkInstall
from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    apply_shipped_rbac,
    wait_for_service_account,
)
from tests.support.flink import FlinkJobManager
from tests.support.waiting import eventually

CLI_TIMEOUT = 400.0
# What cluster_objects() lists when nothing of any cluster is left.
NOTHING: dict[str, list[str]] = {
    "Deployment": [],
    "ReplicaSet": [],
    "Pod": [],
    "Service": [],
    "ConfigMap": [],
}


async def rmd_cli(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """``rmd <args>`` as a subprocess; its output captured."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rmd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def apply_rbac(dev_cluster: DevClusterInfo, core: client.CoreV1Api, namespace: str) -> None:
    """conf/kubernetes/rbac.yaml applied, its service account there."""
    await apply_shipped_rbac(dev_cluster, namespace=namespace)
    await wait_for_service_account(core, namespace=namespace, name="rmd")


def local_conf_dir(
    flink: FlinkInstall, *, namespace: str, work_dir: Path, extra: dict[str, str] | None = None
) -> Path:
    """The configuration directory of a cluster on the local cluster (``work_dir/conf``)."""
    values = session_configuration(
        flink=flink, namespace=namespace, work_dir=work_dir, extra=extra or {}
    )
    return write_session_conf_dir(work_dir / "conf", flink=flink, values=values)


async def cluster_objects(api: client.ApiClient, namespace: str) -> dict[str, list[str]]:
    """Every object of the kinds a cluster has, by kind (names)."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    t = REQUEST_TIMEOUT
    return {
        "Deployment": [
            d.metadata.name
            for d in (await apps.list_namespaced_deployment(namespace, _request_timeout=t)).items
        ],
        "ReplicaSet": [
            r.metadata.name
            for r in (await apps.list_namespaced_replica_set(namespace, _request_timeout=t)).items
        ],
        "Pod": [
            p.metadata.name
            for p in (await core.list_namespaced_pod(namespace, _request_timeout=t)).items
        ],
        "Service": [
            s.metadata.name
            for s in (await core.list_namespaced_service(namespace, _request_timeout=t)).items
        ],
        "ConfigMap": [
            c.metadata.name
            for c in (await core.list_namespaced_config_map(namespace, _request_timeout=t)).items
            if c.metadata.name != "kube-root-ca.crt"
        ],
    }


def pod_logs(dev_cluster: DevClusterInfo, namespace: str, *, tail: int | None = 3000) -> str:
    """The output of the namespace's pods the node emulator ran (kept after they are gone)."""
    parts = []
    for path in sorted(dev_cluster.dir.rglob(f"pods/{namespace}/*/*.log")):
        text = path.read_text(errors="replace")
        parts.append(
            f"--- {path.parent.name}/{path.name}\n{text if tail is None else text[-tail:]}"
        )
    return "\n".join(parts)


@dataclass(frozen=True)
class CliCluster:
    """One test's ``rmd session|application start`` on the local cluster: where it runs,
    its configuration directory, and what it starts."""

    dev_cluster: DevClusterInfo
    flink: FlinkInstall
    namespace: str
    conf_dir: Path
    work_dir: Path

    def logs(self) -> str:
        return pod_logs(self.dev_cluster, self.namespace)

    async def start(self, mode: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``rmd <mode> start --kubeconfig … --conf-dir … <args>`` (``session`` or
        ``application``), asserted to succeed (else the CLI's output and the pods' logs)."""
        started = await rmd_cli(mode, "start", *self.common_args(), *args)
        assert started.returncode == 0, started.stdout + started.stderr + self.logs()
        return started

    def common_args(self) -> list[str]:
        return ["--kubeconfig", str(self.dev_cluster.kubeconfig), "--conf-dir", str(self.conf_dir)]

    @contextlib.asynccontextmanager
    async def jobmanager(
        self, started: subprocess.CompletedProcess[str], *, cluster_id: str, request_timeout: float
    ) -> AsyncIterator[FlinkJobManager]:
        """The JobManager pod ``started`` printed (``JobManager pod: http://<pod IP>:8081``):
        Flink's REST API there, the daemon's on port 8090, over a session of its own."""
        found = re.search(r"JobManager pod: (http://[0-9.]+:8081)", started.stdout)
        assert found, started.stdout
        rest_url = found.group(1)
        timeout = aiohttp.ClientTimeout(total=request_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            yield FlinkJobManager(
                flink=self.flink,
                cluster_id=cluster_id,
                namespace=self.namespace,
                conf_dir=self.conf_dir,
                work_dir=self.work_dir,
                rest_url=rest_url,
                daemon_url=rest_url.replace(":8081", ":8090"),
                http=http,
            )

    async def eventually(
        self,
        condition: Callable[[], Awaitable[bool]],
        *,
        what: str,
        timeout: float,
        interval: float,
    ) -> None:
        """:func:`eventually`; its failure carries the output of the namespace's pods (the
        JobManager's and TaskManagers' JVMs say why)."""
        try:
            await eventually(condition, what=what, timeout=timeout, interval=interval)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.logs()}") from None


def cli_cluster(
    dev_cluster: DevClusterInfo, flink: FlinkInstall, *, namespace: str, work_dir: Path
) -> CliCluster:
    """A :class:`CliCluster` with :func:`local_conf_dir` in ``work_dir``."""
    conf_dir = local_conf_dir(flink, namespace=namespace, work_dir=work_dir)
    return CliCluster(dev_cluster, flink, namespace, conf_dir, work_dir)
