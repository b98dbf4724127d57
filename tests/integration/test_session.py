"""``rmd session start|stop|list`` end to end: the real CLI as a subprocess, the real
controller-manager creating the JobManager pod, the node emulator running the image
entrypoint's ``jobmanager`` role (the rmd daemon + Flink's JobManager from the cached
FLINK_HOME) with the in-cluster credentials of the service account bound to
``conf/kubernetes/rbac.yaml``, a real job, real TaskManagers, and nothing left at the end.

The local-cluster specifics come from the configuration directory
``rmd_dev.flink.session_conf`` writes, not from the product.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from rmd.config.files import parse_config_yaml
from rmd.flink.launch_plan import PLAN_FILE
from rmd.kube.statestore import state_config_map_name
from rmd_dev.provision import FlinkInstall
from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    manifest,
    service_account_kubeconfig,
)
from tests.integration.cluster_cli import (
    CLI_TIMEOUT,
    NOTHING,
    apply_rbac,
    cli_cluster,
    cluster_objects,
    local_conf_dir,
    rmd_cli,
)
from tests.support.flink import TM_SELECTOR, all_tasks_running, assert_started_from_launch_plan
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

JVM_DEADLINE = 240.0


async def _kubectl_delete_deployment(
    dev_cluster: DevClusterInfo, *, namespace: str, name: str
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        ["kubectl", "-n", namespace, "delete", f"deployment/{name}"],
        env={**os.environ, "KUBECONFIG": str(dev_cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


TASKMANAGER_TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata:
  labels:
    from-template: tm
"""


@pytest.mark.parametrize("stop_with", ["rmd-session-stop", "kubectl-delete-deployment"])
async def test_session_start_runs_a_job_and_stopping_removes_everything(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    rate_job_jar: Path,
    tmp_path: Path,
    stop_with: str,
) -> None:
    """Stopped with ``rmd session stop`` (which waits until the pods are gone), or with
    ``kubectl delete deployment/<cluster-id>`` (then the garbage collector removes what the
    Deployment owns: ReplicaSet, JobManager pod, Services, ConfigMap and the TaskManager pods
    the daemon created)."""
    core = client.CoreV1Api(kube_api)
    await apply_rbac(dev_cluster, core, namespace)
    cli = cli_cluster(dev_cluster, flink_install, namespace=namespace, work_dir=tmp_path)
    common = cli.common_args()
    cluster_id = "sess-a"
    begin = time.monotonic()
    # A TaskManager pod template: it travels in the ConfigMap to the daemon in the pod.
    template = tmp_path / "tm-template.yaml"
    template.write_text(TASKMANAGER_TEMPLATE)
    started = await cli.start(
        "session",
        *["-D", f"kubernetes.cluster-id={cluster_id}"],
        *["-D", f"kubernetes.pod-template-file.taskmanager={template}"],
    )
    start_seconds = time.monotonic() - begin
    assert "JobManager ready" in started.stdout
    assert f"in the cluster: http://{cluster_id}-rest.{namespace}.svc:8081" in started.stdout

    objects = await cluster_objects(kube_api, namespace)
    assert objects["Deployment"] == [cluster_id]
    assert sorted(objects["Service"]) == [cluster_id, f"{cluster_id}-rest"]
    # the daemon's state ConfigMap comes with its first state write: there or not yet
    assert set(objects["ConfigMap"]) - {state_config_map_name(cluster_id)} == {
        f"flink-config-{cluster_id}"
    }
    services = {s: await core.read_namespaced_service(s, namespace) for s in objects["Service"]}
    assert services[cluster_id].spec.cluster_ip == "None"
    assert services[f"{cluster_id}-rest"].spec.type == "ClusterIP"

    async with cli.jobmanager(started, cluster_id=cluster_id, request_timeout=30) as jm:

        async def flink_answers() -> bool:
            try:
                await jm.get("/overview")
            except (aiohttp.ClientError, AssertionError):
                return False
            return True

        await eventually(flink_answers, what="Flink's REST API in the JobManager pod", timeout=120)
        job_id = await jm.submit(await jm.upload_jar(rate_job_jar), parallelism=4)
        submitted = time.monotonic()

        await cli.eventually(
            lambda: all_tasks_running(jm, job_id),
            what="4 tasks RUNNING",
            timeout=JVM_DEADLINE,
            interval=1,
        )
        running_seconds = time.monotonic() - submitted
        job = await jm.get(f"/jobs/{job_id}")
        assert {int(vertex["parallelism"]) for vertex in job["vertices"]} == {4}
        taskmanager_pods = await core.list_namespaced_pod(
            namespace, label_selector=f"{TM_SELECTOR},app={cluster_id}"
        )
        tm_names = {pod.metadata.name for pod in taskmanager_pods.items}
        assert {pod.metadata.labels.get("from-template") for pod in taskmanager_pods.items} == {
            "tm"
        }
        # As the daemon in the pod (re)published it: the template beside config.yaml, whose
        # key names the copy mounted in the pod (the path given above is this machine's).
        config_map = await core.read_namespaced_config_map(
            f"flink-config-{cluster_id}", namespace, _request_timeout=REQUEST_TIMEOUT
        )
        assert config_map.data["taskmanager-pod-template.yaml"] == TASKMANAGER_TEMPLATE
        config_yaml = parse_config_yaml(config_map.data["config.yaml"])
        assert config_yaml["kubernetes.pod-template-file.taskmanager"] == (
            "/opt/flink/conf/taskmanager-pod-template.yaml"
        )
        assert len(tm_names) == 2  # 4 slots at 2 per TaskManager
        # The daemon in the JobManager pod made a launch plan, and both TaskManager pods
        # started their JVM from it (no helper JVMs; test_flink_launch_plan.py).
        assert PLAN_FILE in config_map.data
        assert_started_from_launch_plan(dev_cluster.dir, namespace=namespace, pods=tm_names)
        assert await jm.taskmanager_ids() == tm_names  # registered with Flink under pod names

    listed = await rmd_cli("session", "list", *common)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(cluster_id))
    assert row.split()[2:] == ["1/1", "2", "4"]

    begin = time.monotonic()
    if stop_with == "rmd-session-stop":
        stopped = await rmd_cli(
            "session", "stop", *common, "-D", f"kubernetes.cluster-id={cluster_id}"
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert await cluster_objects(kube_api, namespace) == NOTHING
    else:
        deleted = await _kubectl_delete_deployment(
            dev_cluster, namespace=namespace, name=cluster_id
        )
        assert deleted.returncode == 0, deleted.stderr
        assert f'deployment.apps "{cluster_id}" deleted' in deleted.stdout

        async def nothing_left() -> bool:
            return await cluster_objects(kube_api, namespace) == NOTHING

        try:
            await eventually(nothing_left, what="every object of the cluster gone", timeout=120)
        except AssertionError as error:
            left = await cluster_objects(kube_api, namespace)
            raise AssertionError(f"{error}; left: {left}") from None
    stop_seconds = time.monotonic() - begin
    sys.stderr.write(
        f"\nsession: start {start_seconds:.1f} s, submit to all RUNNING {running_seconds:.1f} s, "
        f"stop ({stop_with}) {stop_seconds:.1f} s\n"
    )


async def test_bad_configuration_or_an_existing_cluster_creates_nothing(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    tmp_path: Path,
) -> None:
    conf_dir = local_conf_dir(flink_install, namespace=namespace, work_dir=tmp_path)
    common = ["--kubeconfig", str(dev_cluster.kubeconfig), "--conf-dir", str(conf_dir)]
    empty = NOTHING

    bad = await rmd_cli("session", "start", *common, "-D", "kubernetes.jobmanager.replicas=zero")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "kubernetes.jobmanager.replicas" in bad.stderr
    assert await cluster_objects(kube_api, namespace) == empty

    apps = client.AppsV1Api(kube_api)
    labels = {"app": "taken"}
    existing: Any = manifest(
        {
            "metadata": {"name": "taken"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }
    )
    before = await apps.create_namespaced_deployment(namespace, body=existing)
    taken = await rmd_cli("session", "start", *common, "-D", "kubernetes.cluster-id=taken")
    assert taken.returncode == 1
    assert taken.stderr.count("\n") == 1
    assert "a cluster taken already exists" in taken.stderr
    after = await apps.read_namespaced_deployment("taken", namespace)
    assert after.metadata.uid == before.metadata.uid
    objects = await cluster_objects(kube_api, namespace)
    assert objects["Service"] == []
    assert objects["ConfigMap"] == []

    no_account = await rmd_cli("session", "start", *common, "-D", "kubernetes.cluster-id=lonely")
    assert no_account.returncode == 1
    assert no_account.stderr.count("\n") == 1
    assert 'serviceaccount "rmd" not found' in no_account.stderr
    assert "deleted deployment lonely again" in no_account.stdout

    async def lonely_gone() -> bool:
        objects = await cluster_objects(kube_api, namespace)
        return not any("lonely" in name for names in objects.values() for name in names)

    await eventually(lonely_gone, what="nothing of cluster lonely left", timeout=30)

    unreachable = tmp_path / "unreachable.kubeconfig"
    unreachable.write_text(
        re.sub(
            r"server: \S+",
            "server: https://127.0.0.1:9",
            dev_cluster.kubeconfig.read_text(),
        )
    )
    down = await rmd_cli(
        "session",
        "start",
        "--kubeconfig",
        str(unreachable),
        "--conf-dir",
        str(conf_dir),
        "-D",
        "kubernetes.cluster-id=nowhere",
        "--request-timeout",
        "5",
    )
    assert down.returncode == 1
    assert down.stderr.count("\n") == 1
    assert "cannot reach the Kubernetes API server" in down.stderr


async def _limited_kubeconfig(
    kube_api: client.ApiClient,
    dev_cluster: DevClusterInfo,
    *,
    namespace: str,
    rules: list[dict[str, Any]],
    path: Path,
) -> Path:
    """A kubeconfig of a service account allowed exactly ``rules`` in ``namespace``."""
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    name = "limited"
    await core.create_namespaced_service_account(
        namespace, body=manifest({"metadata": {"name": name}})
    )
    await rbac.create_namespaced_role(
        namespace, body=manifest({"metadata": {"name": name}, "rules": rules})
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        body=manifest(
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            }
        ),
    )
    return await service_account_kubeconfig(
        core, dev_cluster, namespace=namespace, account=name, path=path
    )


async def test_a_missing_permission_is_named_before_anything_is_created(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    tmp_path: Path,
) -> None:
    conf_dir = local_conf_dir(flink_install, namespace=namespace, work_dir=tmp_path)
    everything_but_services = [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "delete"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    kubeconfig = await _limited_kubeconfig(
        kube_api,
        dev_cluster,
        namespace=namespace,
        rules=everything_but_services,
        path=tmp_path / "limited.kubeconfig",
    )
    denied = await rmd_cli(
        "session",
        "start",
        "--kubeconfig",
        str(kubeconfig),
        "--conf-dir",
        str(conf_dir),
        "-D",
        "kubernetes.cluster-id=denied",
    )
    assert denied.returncode == 1
    assert denied.stderr.count("\n") == 1
    assert f"you may not create services in namespace {namespace}" in denied.stderr
    assert "--verb=create --resource=services" in denied.stderr
    objects = await cluster_objects(kube_api, namespace)
    assert objects["Deployment"] == []
    assert objects["ConfigMap"] == []


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort", "LoadBalancer"])
async def test_each_rest_service_type_and_its_printed_endpoint(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    tmp_path: Path,
    service_type: str,
) -> None:
    """The JobManager pod runs nothing here (no emulator annotation): only the objects and
    the printed endpoint are under test."""
    core = client.CoreV1Api(kube_api)
    await apply_rbac(dev_cluster, core, namespace)
    conf_dir = local_conf_dir(flink_install, namespace=namespace, work_dir=tmp_path)
    common = ["--kubeconfig", str(dev_cluster.kubeconfig), "--conf-dir", str(conf_dir)]
    cluster_id = "types"
    started = await rmd_cli(
        "session",
        "start",
        *common,
        "-D",
        f"kubernetes.cluster-id={cluster_id}",
        "-D",
        "kubernetes.jobmanager.annotations=rmd.dev/runs:nothing",
        "-D",
        f"kubernetes.rest-service.exposed.type={service_type}",
    )
    assert started.returncode == 0, started.stdout + started.stderr
    rest = await core.read_namespaced_service(f"{cluster_id}-rest", namespace)
    internal = await core.read_namespaced_service(cluster_id, namespace)
    assert rest.spec.type == service_type
    assert [(p.name, p.port, p.target_port) for p in rest.spec.ports] == [("rest", 8081, 8081)]
    assert internal.spec.cluster_ip == "None"
    assert {p.name: p.port for p in internal.spec.ports} == {
        "jobmanager-rpc": 6123,
        "blobserver": 6124,
        "rmd": 8090,
    }
    assert f"Flink REST service {cluster_id}-rest ({service_type})" in started.stdout
    assert f"in the cluster: http://{cluster_id}-rest.{namespace}.svc:8081" in started.stdout
    if service_type == "NodePort":
        node_port = rest.spec.ports[0].node_port
        assert re.search(rf"http://[0-9.]+:{node_port} ", started.stdout), started.stdout
    if service_type == "LoadBalancer":  # no cloud controller here: no address is given out
        assert "load balancer pending" in started.stdout
    stopped = await rmd_cli(
        "session",
        "stop",
        *common,
        "-D",
        f"kubernetes.cluster-id={cluster_id}",
        "--propagation",
        "Background",
    )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    objects = await cluster_objects(kube_api, namespace)
    assert objects["Deployment"] == []
    assert objects["Pod"] == []


async def test_attach_shows_readiness_and_ctrl_c_stops_the_cluster(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    flink_install: FlinkInstall,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(kube_api)
    await apply_rbac(dev_cluster, core, namespace)
    conf_dir = local_conf_dir(flink_install, namespace=namespace, work_dir=tmp_path)
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "rmd", "session", "start", "--attach"],
        *["--kubeconfig", str(dev_cluster.kubeconfig), "--conf-dir", str(conf_dir)],
        *["-D", "kubernetes.cluster-id=attached"],
        *["-D", "kubernetes.jobmanager.annotations=rmd.dev/runs:nothing"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(120):
            while not any("JobManager 1/1 ready" in line for line in seen):
                line = (await process.stdout.readline()).decode()
                assert line, "".join(seen)
                seen.append(line)
        assert any(line.startswith("attached:") for line in seen)
        assert (await cluster_objects(kube_api, namespace))["Deployment"] == ["attached"]
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(120):
            rest, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, "".join(seen) + rest.decode()
    assert "session cluster attached removed" in rest.decode()
    objects = await cluster_objects(kube_api, namespace)
    assert objects["Deployment"] == []
    assert objects["Pod"] == []
    assert objects["Service"] == []
