"""``rmd session`` / ``rmd application`` as a user runs them, on the local cluster: the real
CLI as a subprocess, the configuration directory for the local cluster, and what a cluster
leaves behind, listed kind by kind."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
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


def started_jobmanager(
    flink: FlinkInstall,
    *,
    start_output: str,
    cluster_id: str,
    namespace: str,
    conf_dir: Path,
    work_dir: Path,
    http: aiohttp.ClientSession,
) -> FlinkJobManager:
    """The JobManager pod ``rmd session|application start`` printed (``JobManager pod:
    http://<pod IP>:8081``): Flink's REST API there, the daemon's on port 8090."""
    found = re.search(r"JobManager pod: (http://[0-9.]+:8081)", start_output)
    assert found, start_output
    rest_url = found.group(1)
    return FlinkJobManager(
        flink=flink,
        cluster_id=cluster_id,
        namespace=namespace,
        conf_dir=conf_dir,
        work_dir=work_dir,
        rest_url=rest_url,
        daemon_url=rest_url.replace(":8081", ":8090"),
        http=http,
    )
