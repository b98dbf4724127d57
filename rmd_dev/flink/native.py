"""Flink's OWN native Kubernetes session cluster on the local control plane: the reference rmd
is measured against (``bench/flink_side_by_side.py``).

Flink's ``KubernetesSessionClusterEntrypoint`` (``kubernetes-jobmanager.sh
kubernetes-session``) runs here as a local process, with ``kubernetes.config.file`` pointing
at the dev cluster's kubeconfig; its ``KubernetesResourceManagerDriver`` creates TaskManager
pods there, and the node emulator runs them as local TaskManager JVMs
(``emulator.rmd.dev/run: process``). What ``kubernetes-session.sh`` (the client) would have
set up in the cluster, and what the image would hold, is supplied here:

- the owner Deployment ``<cluster-id>`` (0 replicas: the JobManager runs here), which the
  driver looks up to own its pods;
- the ``flink-config-<cluster-id>`` ConfigMap (``config.yaml`` + the console logging files)
  TaskManager pods mount at ``kubernetes.flink.conf.dir`` (the emulator mounts it);
- the TaskManager pod template, which the JobManager reads only from
  ``/opt/flink/pod-template/taskmanager-pod-template.yaml``: the JobManager runs in a
  private mount namespace (:func:`rmd_dev.emulator.mountns.in_mount_namespace`, so root and
  ``unshare``) with the template's folder mounted there; nothing on the machine changes;
- native mode refuses ``taskmanager.rpc.port: 0``, and all pods share the host's network,
  so the template gives the pod ``_POD_IP_ADDRESS`` (``status.podIP``) and
  ``kubernetes.entry.path`` is ``native-entrypoint.sh``, which makes each TaskManager bind
  its own pod IP.

The configuration is the rmd JobManager pod's (:func:`jobmanager_configuration`) without the
``rmd.*`` keys, so the same job sees the same Flink under both resource managers.

    python -m rmd_dev.flink.native --kubeconfig K [--namespace N] [--cluster-id C]
                                   [--work-dir D] [-D key=value ...]

runs one until Ctrl-C / SIGTERM, then deletes what it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import client, config

from rmd.kube.flinkconfigmap import (
    FlinkConfigMap,
    config_map_data,
    publish_flink_config_map,
    read_log_config_files,
)
from rmd.kube.podspec import (
    LABEL_APP,
    LABEL_TYPE,
    LABEL_TYPE_NATIVE,
    OwnerReference,
    flink_config_map_name,
)
from rmd_dev.emulator.mountns import in_mount_namespace
from rmd_dev.flink.jobmanager import (
    FlinkRest,
    FlinkRestError,
    JobManagerPorts,
    delete_taskmanager_pods,
    jobmanager_configuration,
    jobmanager_deployment_manifest,
    kill_group,
    spawn,
    stop_group,
    write_conf_dir,
)
from rmd_dev.interrupt import SIGTERM_EXIT_CODE, run_cancellable
from rmd_dev.provision import (
    DEFAULT_FLINK_VERSION,
    FlinkInstall,
    PhaseLog,
    cache_root,
    provision_flink,
)

ENTRY_SCRIPT = Path(__file__).resolve().parent / "native-entrypoint.sh"
POD_TEMPLATE_DIR_IN_POD = "/opt/flink/pod-template"  # Flink's Constants.POD_TEMPLATE_DIR_IN_POD
POD_TEMPLATE_FILE = "taskmanager-pod-template.yaml"
TASKMANAGER_RPC_PORT = 6122  # native mode refuses 0; each TaskManager binds its own pod IP
REQUEST_TIMEOUT = (5, 30)


def native_configuration(
    *,
    flink: FlinkInstall,
    cluster_id: str,
    namespace: str,
    work_dir: Path,
    ports: JobManagerPorts,
    kubeconfig: Path,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """config.yaml of Flink's native session JobManager: the rmd JobManager pod's Flink keys
    (no ``rmd.*``) plus what native mode needs here; ``extra`` wins."""
    values = {
        key: value
        for key, value in jobmanager_configuration(
            flink=flink,
            cluster_id=cluster_id,
            namespace=namespace,
            work_dir=work_dir,
            ports=ports,
            extra={},
        ).items()
        if not key.startswith("rmd.")
    }
    values.update(
        {
            "kubernetes.config.file": str(kubeconfig),
            "kubernetes.entry.path": str(ENTRY_SCRIPT),
            "taskmanager.rpc.port": str(TASKMANAGER_RPC_PORT),
            # The pod mounts the ConfigMap at /opt/flink/conf, but the local FLINK_HOME's
            # scripts would read $FLINK_HOME/conf: point them at the JobManager's directory
            # (same config.yaml, plus the logging files the ConfigMap volume leaves out).
            "containerized.taskmanager.env.FLINK_CONF_DIR": str(work_dir / "conf"),
        }
    )
    values.update(extra)
    return values


def taskmanager_pod_template() -> dict[str, Any]:
    """The TaskManager pod template: the main container gets its pod IP as
    ``_POD_IP_ADDRESS`` (``native-entrypoint.sh`` binds the TaskManager to it)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "taskmanager-pod-template"},
        "spec": {
            "containers": [
                {
                    "name": "flink-main-container",
                    "env": [
                        {
                            "name": "_POD_IP_ADDRESS",
                            "valueFrom": {
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}
                            },
                        }
                    ],
                }
            ]
        },
    }


@dataclass
class NativeSessionCluster:
    """Flink's native session JobManager as a local process; logs in
    ``work_dir/jobmanager.log`` (one file across restarts)."""

    flink: FlinkInstall
    api: client.ApiClient
    kubeconfig: Path
    namespace: str
    cluster_id: str
    work_dir: Path
    ports: JobManagerPorts = field(default_factory=JobManagerPorts.free)
    process: asyncio.subprocess.Process | None = None

    @property
    def conf_dir(self) -> Path:
        return self.work_dir / "conf"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.rest}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "jobmanager.log"

    async def create(self, *, extra: Mapping[str, str]) -> None:
        """Write the configuration and the pod template; create the owner Deployment and the
        ``flink-config-<cluster-id>`` ConfigMap (what ``kubernetes-session.sh`` would)."""
        values = native_configuration(
            flink=self.flink,
            cluster_id=self.cluster_id,
            namespace=self.namespace,
            work_dir=self.work_dir,
            ports=self.ports,
            kubeconfig=self.kubeconfig,
            extra=extra,
        )
        template_dir = self.work_dir / "pod-template"
        template_dir.mkdir(parents=True, exist_ok=True)
        (template_dir / POD_TEMPLATE_FILE).write_text(yaml.safe_dump(taskmanager_pod_template()))
        await asyncio.to_thread(write_conf_dir, self.conf_dir, flink=self.flink, values=values)
        apps = client.AppsV1Api(self.api)
        body: Any = jobmanager_deployment_manifest(self.cluster_id, namespace=self.namespace)
        deployment = await apps.create_namespaced_deployment(
            self.namespace, body=body, _request_timeout=REQUEST_TIMEOUT
        )
        owner = OwnerReference(
            api_version="apps/v1",
            kind="Deployment",
            name=self.cluster_id,
            uid=deployment.metadata.uid,
        )
        config_map = FlinkConfigMap(
            name=flink_config_map_name(self.cluster_id),
            namespace=self.namespace,
            labels={LABEL_TYPE: LABEL_TYPE_NATIVE, LABEL_APP: self.cluster_id},
            data=config_map_data(
                values,
                log_files=read_log_config_files(self.conf_dir),
                taskmanager_pod_template=None,
                conf_dir=values.get("kubernetes.flink.conf.dir", "/opt/flink/conf"),
            ),
        )
        await publish_flink_config_map(self.api, config_map, owner=owner, timeout=30)

    async def start(self) -> None:
        """Start the JobManager (after :meth:`create`; again after :meth:`kill`)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "FLINK_HOME": str(self.flink.home),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.work_dir / "jobmanager-logs"),
            "FLINK_PID_DIR": str(self.work_dir / "pids"),
        }
        argv = in_mount_namespace(
            [str(self.flink.home / "bin" / "kubernetes-jobmanager.sh"), "kubernetes-session"],
            binds=[(self.work_dir / "pod-template", POD_TEMPLATE_DIR_IN_POD)],
            scratch=self.work_dir / "mountns",
        )
        (self.work_dir / "mountns").mkdir(parents=True, exist_ok=True)
        self.process = await spawn(argv, env=env, log_path=self.log_path, cwd=self.work_dir)

    async def kill(self) -> None:
        """SIGKILL the JobManager (its TaskManager pods stay, as after a JobManager crash)."""
        if self.process is not None:
            await kill_group(self.process)

    async def stop(self) -> None:
        """SIGTERM the JobManager, delete its TaskManager pods (waiting until they and their
        JVMs are gone), the ConfigMap and the owner Deployment."""
        if self.process is not None:
            await stop_group(self.process)
        await delete_taskmanager_pods(
            self.api, namespace=self.namespace, cluster_id=self.cluster_id
        )
        core = client.CoreV1Api(self.api)
        with contextlib.suppress(client.ApiException):
            await core.delete_namespaced_config_map(
                flink_config_map_name(self.cluster_id),
                self.namespace,
                _request_timeout=REQUEST_TIMEOUT,
            )
        with contextlib.suppress(client.ApiException):
            await client.AppsV1Api(self.api).delete_namespaced_deployment(
                self.cluster_id, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )

    def exited(self) -> int | None:
        """The JobManager's exit code, None while it runs."""
        return None if self.process is None else self.process.returncode

    async def wait_answering(self, rest: FlinkRest, *, timeout: float) -> None:
        """Wait until ``/overview`` answers 200 (the resource manager is up); a JobManager
        that exits meanwhile raises at once, naming its log."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self.exited() is not None:
                        raise RuntimeError(
                            f"Flink's native JobManager exited with {self.exited()} while "
                            f"starting; see {self.log_path}"
                        )
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, FlinkRestError):
                        await rest.get("/overview")
                        return
                    await asyncio.sleep(0.5)
        except TimeoutError:
            raise TimeoutError(
                f"Flink's native JobManager did not answer within {timeout:g} s; see "
                f"{self.log_path}"
            ) from None


@contextlib.asynccontextmanager
async def native_session(
    *,
    flink: FlinkInstall,
    api: client.ApiClient,
    kubeconfig: Path,
    namespace: str,
    cluster_id: str,
    work_dir: Path,
    extra: Mapping[str, str] | None = None,
) -> Any:
    """A started :class:`NativeSessionCluster`, stopped and cleaned up at the end."""
    cluster = NativeSessionCluster(
        flink=flink,
        api=api,
        kubeconfig=kubeconfig,
        namespace=namespace,
        cluster_id=cluster_id,
        work_dir=work_dir,
    )
    try:
        await cluster.create(extra=extra or {})
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


# ---------------------------------------------------------------------------- command line


def _dynamic(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"-D {text!r}: write -D key=value")
    return key.strip(), value.strip()


async def _serve(args: argparse.Namespace) -> None:
    log = PhaseLog(log_path=cache_root() / "provision.log")
    flink = await asyncio.to_thread(provision_flink, log=log, version=args.flink_version)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="rmd-flink-native-"))
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(args.kubeconfig), client_configuration=configuration
    )
    async with (
        client.ApiClient(configuration) as api,
        native_session(
            flink=flink,
            api=api,
            kubeconfig=args.kubeconfig,
            namespace=args.namespace,
            cluster_id=args.cluster_id,
            work_dir=work_dir,
            extra=dict(args.dynamic),
        ) as cluster,
    ):
        print(f"Flink native session {args.cluster_id}: REST {cluster.rest_url}", flush=True)
        print(f"JobManager log: {cluster.log_path}", flush=True)
        assert cluster.process is not None
        code = await cluster.process.wait()
        print(f"the JobManager exited with {code}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmd_dev.flink.native", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--cluster-id", default="flink-native")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--flink-version", default=DEFAULT_FLINK_VERSION)
    parser.add_argument("-D", dest="dynamic", type=_dynamic, action="append", default=[])
    args = parser.parse_args(argv)
    if run_cancellable(_serve(args)) is None:
        return SIGTERM_EXIT_CODE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
