"""The node emulator against the real control plane: the kubelet's part, for real pods.

Every pod here is created through kubernetes_asyncio, bound by the real kube-scheduler to a
fake node, and brought to life by the emulator that ``rmd dev-cluster up`` started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from rmd_dev.emulator.api import EmulatorApi
from rmd_dev.emulator.main import Emulator, api_server_address, inherited_environment
from rmd_dev.nodes import DEFAULT_CAPACITY, node_status
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo
from tests.support.waiting import eventually, within

pytestmark = pytest.mark.integration

RUN = "emulator.rmd.dev/run"


def pod_dir(cluster: DevClusterInfo, namespace: str, name: str) -> Path:
    return cluster.dir / "emulator" / "pods" / namespace / name


def make_pod(
    name: str,
    *,
    command: list[str] | None = None,
    annotations: dict[str, str] | None = None,
    env: list[dict[str, Any]] | None = None,
    grace: int | None = None,
    image: str = "busybox:1.36",
    **spec: Any,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image}
    if command is not None:
        container["command"] = command
    if env:
        container["env"] = env
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }
    if grace is not None:
        body["spec"]["terminationGracePeriodSeconds"] = grace
    return body


def read_text(path: Path) -> str:
    """The file's text; empty while it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


async def file_contains(path: Path, text: str, *, timeout: float = 30.0) -> str:
    async def check() -> bool:
        return text in read_text(path)

    await eventually(check, what=f"{text!r} in {path}", timeout=timeout)
    return read_text(path)


class Pods:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    async def create(self, body: dict[str, Any]) -> None:
        # The client accepts camelCase JSON dicts (the stubs only name the model class).
        manifest: Any = body
        await self.core.create_namespaced_pod(
            self.namespace, body=manifest, _request_timeout=REQUEST_TIMEOUT
        )

    async def read(self, name: str) -> client.V1Pod | None:
        try:
            return await self.core.read_namespaced_pod(
                name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def wait(
        self,
        name: str,
        predicate: Callable[[client.V1Pod], bool],
        *,
        what: str,
        timeout: float = 30,
    ) -> client.V1Pod:
        found: list[client.V1Pod] = []

        async def check() -> bool:
            pod = await self.read(name)
            if pod is not None and predicate(pod):
                found.append(pod)
                return True
            return False

        await eventually(check, what=f"pod {name}: {what}", timeout=timeout)
        return found[-1]

    async def wait_phase(self, name: str, phase: str, *, timeout: float = 30) -> client.V1Pod:
        return await self.wait(
            name, lambda pod: pod.status.phase == phase, what=f"phase {phase}", timeout=timeout
        )

    async def delete(self, name: str, **options: Any) -> None:
        await self.core.delete_namespaced_pod(
            name, self.namespace, _request_timeout=REQUEST_TIMEOUT, **options
        )

    async def wait_gone(self, name: str, *, timeout: float = 30) -> float:
        """Seconds until the pod no longer exists."""
        began = time.monotonic()

        async def check() -> bool:
            return await self.read(name) is None

        await eventually(check, what=f"pod {name} gone", timeout=timeout)
        return time.monotonic() - began


@pytest.fixture
def pods(kube_api: client.ApiClient, namespace: str) -> Pods:
    return Pods(kube_api, namespace)


def waiting_reason(pod: client.V1Pod) -> str | None:
    statuses = pod.status.container_statuses or []
    if statuses and statuses[0].state.waiting is not None:
        return str(statuses[0].state.waiting.reason)
    return None


def terminated(pod: client.V1Pod) -> Any:
    statuses = pod.status.container_statuses or []
    return statuses[0].state.terminated if statuses else None


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_process_pod_runs_with_its_identity_and_exits_succeeded(
    pods: Pods, kube_api: client.ApiClient, namespace: str, dev_cluster: DevClusterInfo
) -> None:
    core = pods.core
    await core.create_namespaced_config_map(
        namespace,
        body=client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="settings"), data={"greeting": "hello"}
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )
    await core.create_namespaced_secret(
        namespace,
        body=client.V1Secret(
            metadata=client.V1ObjectMeta(name="creds"), string_data={"password": "s3cret"}
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )
    script = (
        'echo "$MY_POD_NAME $MY_POD_IP $MY_NODE $GREETING $PASSWORD" > identity.txt; '
        "while [ ! -f release ]; do sleep 0.05; done"
    )
    await pods.create(
        make_pod(
            "identity",
            command=["sh", "-c", script],
            annotations={RUN: "process"},
            env=[
                {"name": "MY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {
                    "name": "GREETING",
                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}},
                },
                {
                    "name": "PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                },
            ],
        )
    )
    running = await pods.wait_phase("identity", "Running")
    assert running.spec.node_name in dev_cluster.node_names
    pod_ip = ipaddress.IPv4Address(running.status.pod_ip)
    assert pod_ip in ipaddress.IPv4Network("127.0.0.0/8")
    assert running.status.host_ip == "127.0.0.1"
    conditions = {c.type: c.status for c in running.status.conditions}
    assert conditions == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    (container,) = running.status.container_statuses
    assert container.ready is True
    assert container.state.running.started_at is not None
    assert container.container_id.startswith("emulator://")

    directory = pod_dir(dev_cluster, namespace, "identity")
    identity = await file_contains(directory / "identity.txt", "identity")
    assert identity.split() == [
        "identity",
        running.status.pod_ip,
        running.spec.node_name,
        "hello",
        "s3cret",
    ]

    (directory / "release").touch()
    done = await pods.wait_phase("identity", "Succeeded")
    end = terminated(done)
    assert end.exit_code == 0
    assert end.reason == "Completed"
    assert end.started_at is not None
    assert end.finished_at is not None
    assert done.status.container_statuses[0].ready is False


# Serves HTTP 200 on $POD_IP:8080 until a file "fail" appears (then 503); listens on 8081
# only once a file "listen" exists. The emulator runs it with the pod's directory as cwd.
PROBED_SCRIPT = """
import http.server, os, pathlib, socket, sys, time
ip = os.environ["POD_IP"]
if sys.argv[1] == "web":
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503 if pathlib.Path("fail").exists() else 200)
            self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer((ip, 8080), Handler).serve_forever()
while not pathlib.Path("listen").exists():
    time.sleep(0.05)
server = socket.create_server((ip, 8081))
while True:
    server.accept()[0].close()
"""


def _ready_of(pod: client.V1Pod) -> dict[str, bool]:
    found = {c.name: bool(c.ready) for c in pod.status.container_statuses or []}
    found.update({f"pod:{c.type}": c.status == "True" for c in pod.status.conditions or []})
    return found


async def test_readiness_probes_decide_when_containers_and_the_pod_are_ready(
    pods: Pods, dev_cluster: DevClusterInfo, namespace: str
) -> None:
    """httpGet (named port, initialDelaySeconds, successThreshold, failureThreshold) and
    tcpSocket readiness probes, as the kubelet runs them: the pod is Running at once but
    Ready only when every probed container is."""
    pod_ip_env = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    body = make_pod("probed", annotations={RUN: "process"})
    body["spec"]["containers"] = [
        {
            "name": "web",
            "image": "python:3",
            "command": [sys.executable, "-c", PROBED_SCRIPT, "web"],
            "env": pod_ip_env,
            "ports": [{"name": "web", "containerPort": 8080}],
            "readinessProbe": {
                "httpGet": {"path": "/ready", "port": "web"},
                "initialDelaySeconds": 5,
                "periodSeconds": 1,
                "successThreshold": 2,
                "failureThreshold": 2,
            },
        },
        {
            "name": "tcp",
            "image": "python:3",
            "command": [sys.executable, "-c", PROBED_SCRIPT, "tcp"],
            "env": pod_ip_env,
            "readinessProbe": {"tcpSocket": {"port": 8081}, "periodSeconds": 1},
        },
    ]
    await pods.create(body)
    running = await pods.wait_phase("probed", "Running")
    seen_running = time.monotonic()
    assert _ready_of(running) == {
        "web": False,
        "tcp": False,
        "pod:PodScheduled": True,
        "pod:Initialized": True,
        "pod:ContainersReady": False,
        "pod:Ready": False,
    }
    assert all(c.started for c in running.status.container_statuses)

    web_ready = await pods.wait(
        "probed", lambda pod: _ready_of(pod)["web"], what="web ready", timeout=30
    )
    # Its server answers from the start: only initialDelaySeconds (5 s) held it back.
    assert time.monotonic() - seen_running >= 3.5
    assert _ready_of(web_ready)["pod:Ready"] is False  # tcp is not listening yet
    ready_condition = next(c for c in web_ready.status.conditions if c.type == "Ready")
    assert ready_condition.reason == "ContainersNotReady"
    assert ready_condition.message == "containers with unready status: [tcp]"

    directory = pod_dir(dev_cluster, namespace, "probed")
    (directory / "listen").touch()
    await pods.wait("probed", lambda pod: _ready_of(pod)["pod:Ready"], what="pod Ready")

    (directory / "fail").touch()
    unready = await pods.wait(
        "probed", lambda pod: not _ready_of(pod)["web"], what="web unready", timeout=30
    )
    assert _ready_of(unready)["tcp"] is True
    assert _ready_of(unready)["pod:Ready"] is False
    assert unready.status.phase == "Running"
    await pods.delete("probed", grace_period_seconds=1)
    await pods.wait_gone("probed")


async def test_non_zero_exit_fails_the_pod_with_its_exit_code(pods: Pods) -> None:
    await pods.create(
        make_pod("exit3", command=["sh", "-c", "exit 3"], annotations={RUN: "process"})
    )
    failed = await pods.wait_phase("exit3", "Failed")
    end = terminated(failed)
    assert end.exit_code == 3
    assert end.reason == "Error"


async def test_a_command_that_does_not_exist_cannot_run(pods: Pods) -> None:
    await pods.create(
        make_pod("nocmd", command=["no-such-command-xyz"], annotations={RUN: "process"})
    )
    failed = await pods.wait_phase("nocmd", "Failed")
    end = terminated(failed)
    assert end.exit_code == 127
    assert end.reason == "ContainerCannotRun"
    assert "executable file not found" in end.message


async def test_deletion_stops_a_process_within_the_grace_period_and_removes_the_pod(
    pods: Pods, namespace: str, dev_cluster: DevClusterInfo
) -> None:
    stubborn = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open('pid', 'w').write(str(os.getpid()) + '\\n')\n"
        "time.sleep(600)\n"
    )
    await pods.create(
        make_pod(
            "stubborn",
            command=[sys.executable, "-c", stubborn],
            annotations={RUN: "process"},
            grace=2,
        )
    )
    await pods.wait_phase("stubborn", "Running")
    pid_file = pod_dir(dev_cluster, namespace, "stubborn") / "pid"
    pid = int(await file_contains(pid_file, "\n"))
    assert pid_alive(pid)

    await pods.delete("stubborn")
    seconds = await pods.wait_gone("stubborn", timeout=20)
    assert seconds < 2 + 8  # grace period plus slack: SIGKILL came, nothing stays Terminating
    assert not pid_alive(pid)


async def test_deletion_of_a_cooperative_process_does_not_wait_for_the_grace_period(
    pods: Pods,
) -> None:
    await pods.create(
        make_pod(
            "polite",
            command=["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"],
            annotations={RUN: "process"},
            grace=60,
        )
    )
    await pods.wait_phase("polite", "Running")
    await pods.delete("polite")
    assert await pods.wait_gone("polite", timeout=30) < 20


async def delete_and_watch_to_the_end(pods: Pods, name: str) -> list[client.V1Pod]:
    """Delete the pod and return every version of it the watch shows until it is gone."""
    current = await pods.read(name)
    assert current is not None
    seen: list[client.V1Pod] = []
    async with watch.Watch() as w, asyncio.timeout(60):
        stream = w.stream(
            pods.core.list_namespaced_pod,
            pods.namespace,
            field_selector=f"metadata.name={name}",
            resource_version=current.metadata.resource_version,
            timeout_seconds=60,
            _request_timeout=(5, 90),
        )
        await pods.delete(name)
        async for event in stream:
            seen.append(event["object"])
            if event["type"] == "DELETED":
                break
    return seen


async def test_a_deleted_pod_ends_with_its_containers_exit_codes_before_it_is_removed(
    pods: Pods,
) -> None:
    """As the kubelet does: the last status of a deleted pod shows how its container ended
    (its own exit code when it exits on SIGTERM, 137 when it had to be killed) and the phase
    that follows, before the pod goes; a watcher sees why it ended."""
    await pods.create(
        make_pod(
            "exits-on-term",
            command=["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.05; done"],
            annotations={RUN: "process"},
            grace=30,
        )
    )
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n"
    )
    await pods.create(
        make_pod(
            "killed",
            command=[sys.executable, "-c", stubborn],
            annotations={RUN: "process"},
            grace=1,
        )
    )
    await pods.wait_phase("exits-on-term", "Running")
    await pods.wait_phase("killed", "Running")
    for name, code in (("exits-on-term", 7), ("killed", 137)):
        versions = await delete_and_watch_to_the_end(pods, name)
        last = versions[-1]
        assert last.metadata.deletion_timestamp is not None
        assert last.status.phase == "Failed", (name, last.status)
        end = terminated(last)
        assert end is not None, (name, last.status)
        assert (end.exit_code, end.reason) == (code, "Error")
        assert await pods.read(name) is None


async def test_pods_without_a_process_and_finished_pods_are_removed_at_once(pods: Pods) -> None:
    await pods.create(make_pod("pause", grace=300))
    await pods.create(make_pod("finished", command=["true"], annotations={RUN: "process"}))
    await pods.wait_phase("pause", "Running")
    await pods.wait_phase("finished", "Succeeded")
    await pods.delete("pause")
    await pods.delete("finished")
    assert await pods.wait_gone("pause", timeout=20) < 10
    assert await pods.wait_gone("finished", timeout=20) < 10


async def test_image_pull_failure_is_visible_as_err_image_pull_then_back_off(pods: Pods) -> None:
    await pods.create(
        make_pod(
            "unpullable",
            annotations={"emulator.rmd.dev/image-pull-error": "true"},
            image="registry.invalid/nope:1.0",
        )
    )
    first = await pods.wait(
        "unpullable", lambda p: waiting_reason(p) == "ErrImagePull", what="ErrImagePull"
    )
    assert "pull access denied for registry.invalid/nope" in (
        first.status.container_statuses[0].state.waiting.message
    )
    backing_off = await pods.wait(
        "unpullable", lambda p: waiting_reason(p) == "ImagePullBackOff", what="ImagePullBackOff"
    )
    assert backing_off.status.phase == "Pending"
    assert backing_off.status.container_statuses[0].state.waiting.message == (
        'Back-off pulling image "registry.invalid/nope:1.0"'
    )
    await pods.delete("unpullable")
    await pods.wait_gone("unpullable", timeout=20)


async def test_crash_after_fails_a_pod_without_a_process(pods: Pods) -> None:
    await pods.create(make_pod("crashy", annotations={"emulator.rmd.dev/crash-after": "1"}))
    running = await pods.wait_phase("crashy", "Running")
    failed = await pods.wait_phase("crashy", "Failed")
    end = terminated(failed)
    assert end.exit_code == 1
    assert end.reason == "Error"
    started = running.status.container_statuses[0].state.running.started_at
    assert (end.finished_at - started).total_seconds() >= 1


async def test_coroutine_workload_runs_and_stops_on_deletion(
    pods: Pods, namespace: str, dev_cluster: DevClusterInfo
) -> None:
    await pods.create(
        make_pod(
            "coro",
            annotations={RUN: "coroutine", "emulator.rmd.dev/workload": "sleep"},
            grace=60,
        )
    )
    await pods.wait_phase("coro", "Running")
    log = pod_dir(dev_cluster, namespace, "coro") / "main.log"
    await file_contains(log, "workload sleep started")
    assert "returned" not in log.read_text()
    await pods.delete("coro")
    assert await pods.wait_gone("coro", timeout=30) < 20
    await file_contains(log, "workload sleep returned 0")


async def test_unschedulable_pods_stay_pending_untouched(pods: Pods) -> None:
    await pods.create(make_pod("no-match", nodeSelector={"rmd.dev/no-such-node": "x"}))
    too_big = make_pod("too-big")
    too_big["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100000"}}
    await pods.create(too_big)
    for name in ("no-match", "too-big"):
        await pods.wait(
            name,
            lambda p: any(
                c.type == "PodScheduled" and c.reason == "Unschedulable"
                for c in p.status.conditions or []
            ),
            what="Unschedulable",
        )
    # The emulator handles events in order: once a later pod runs, it has seen these two.
    await pods.create(make_pod("later"))
    await pods.wait_phase("later", "Running")
    for name in ("no-match", "too-big"):
        pod = await pods.read(name)
        assert pod is not None
        assert pod.spec.node_name is None
        assert pod.status.phase == "Pending"
        assert pod.status.pod_ip is None
        assert pod.status.container_statuses is None


async def test_missing_config_map_waits_with_create_container_config_error(
    pods: Pods, namespace: str
) -> None:
    await pods.create(
        make_pod(
            "needs-config",
            env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}],
        )
    )
    waiting = await pods.wait(
        "needs-config",
        lambda p: waiting_reason(p) == "CreateContainerConfigError",
        what="CreateContainerConfigError",
    )
    assert waiting.status.container_statuses[0].state.waiting.message == (
        'configmap "later" not found'
    )
    assert waiting.status.phase == "Pending"
    await pods.core.create_namespaced_config_map(
        namespace,
        body=client.V1ConfigMap(metadata=client.V1ObjectMeta(name="later"), data={"x": "1"}),
        _request_timeout=REQUEST_TIMEOUT,
    )
    await pods.wait_phase("needs-config", "Running")


async def test_service_account_token_lets_the_process_read_its_own_pod(
    pods: Pods, kube_api: client.ApiClient, namespace: str, dev_cluster: DevClusterInfo
) -> None:
    rbac = client.RbacAuthorizationV1Api(kube_api)
    await rbac.create_namespaced_role(
        namespace,
        body=client.V1Role(
            metadata=client.V1ObjectMeta(name="read-pods"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get"])],
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        body=client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="read-pods"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="read-pods"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="default", namespace=namespace)
            ],
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )
    in_pod_client = (
        "import os, ssl, urllib.request\n"
        "d = os.environ['RMD_SERVICE_ACCOUNT_DIR']\n"
        "token = open(os.path.join(d, 'token')).read()\n"
        "ns = open(os.path.join(d, 'namespace')).read()\n"
        "ctx = ssl.create_default_context(cafile=os.path.join(d, 'ca.crt'))\n"
        "url = 'https://%s:%s/api/v1/namespaces/%s/pods/%s' % (\n"
        "    os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'],\n"
        "    ns, os.environ['HOSTNAME'])\n"
        "request = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + token})\n"
        "answer = urllib.request.urlopen(request, context=ctx)\n"
        "open('answer.txt', 'w').write(str(answer.status))\n"
    )
    await pods.create(
        make_pod(
            "reader", command=[sys.executable, "-c", in_pod_client], annotations={RUN: "process"}
        )
    )
    done = await pods.wait(
        "reader", lambda p: p.status.phase in ("Succeeded", "Failed"), what="finished"
    )
    directory = pod_dir(dev_cluster, namespace, "reader")
    assert done.status.phase == "Succeeded", (directory / "main.log").read_text()
    assert (directory / "answer.txt").read_text() == "200"


async def test_no_token_files_when_the_pod_opts_out(
    pods: Pods, namespace: str, dev_cluster: DevClusterInfo
) -> None:
    await pods.create(
        make_pod(
            "no-token",
            command=["sh", "-c", 'echo "dir=${RMD_SERVICE_ACCOUNT_DIR:-none}" > env.txt'],
            annotations={RUN: "process"},
            automountServiceAccountToken=False,
        )
    )
    await pods.wait_phase("no-token", "Succeeded")
    directory = pod_dir(dev_cluster, namespace, "no-token")
    assert (directory / "env.txt").read_text().strip() == "dir=none"
    assert not (directory / "serviceaccount").exists()


async def test_process_inherits_only_path_and_home(
    pods: Pods, namespace: str, dev_cluster: DevClusterInfo
) -> None:
    await pods.create(
        make_pod("env", command=["sh", "-c", "env > env.txt"], annotations={RUN: "process"})
    )
    await pods.wait_phase("env", "Succeeded")
    names = {
        line.split("=", 1)[0]
        for line in (pod_dir(dev_cluster, namespace, "env") / "env.txt").read_text().splitlines()
    }
    assert {
        "PATH",
        "HOME",
        "HOSTNAME",
        "KUBERNETES_SERVICE_HOST",
        "RMD_SERVICE_ACCOUNT_DIR",
    } <= names
    own = set(os.environ) - {"PATH", "HOME", "HOSTNAME", "PWD", "SHLVL", "_"}
    assert not (names & own), names & own


# ---------------------------------------------------------------- an emulator of our own
# These tests start their own emulator for a private node (tainted, so the scheduler puts
# nobody else's pods there; their pods name the node directly), to stop and restart it
# without disturbing the session's emulator.

PRIVATE_TAINT = {"key": "rmd.dev/emulator-test", "value": "private", "effect": "NoSchedule"}


@pytest.fixture
async def private_node(kube_api: client.ApiClient) -> AsyncIterator[str]:
    core = client.CoreV1Api(kube_api)
    name = f"emu-test-{secrets.token_hex(3)}"
    manifest: Any = {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": [PRIVATE_TAINT]},
    }
    await core.create_node(body=manifest, _request_timeout=REQUEST_TIMEOUT)
    status: Any = {"status": node_status(DEFAULT_CAPACITY)}
    await core.patch_node_status(name, body=status, _request_timeout=REQUEST_TIMEOUT)
    try:
        yield name
    finally:
        await core.delete_node(name, _request_timeout=REQUEST_TIMEOUT)


def emulator_command(cluster: DevClusterInfo, *, node: str, state_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rmd_dev.emulator",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--state-dir",
        str(state_dir),
        "--nodes",
        node,
    ]


@contextlib.asynccontextmanager
async def emulator_in_process(
    api: client.ApiClient, *, node: str, state_dir: Path
) -> AsyncIterator[Emulator]:
    emulator = Emulator(
        api=EmulatorApi(api),
        nodes=[node],
        state_dir=state_dir,
        api_server=api_server_address(str(api.configuration.host)),
        inherited_env=inherited_environment(os.environ, python=sys.executable),
    )
    running = asyncio.create_task(emulator.run())
    try:
        await within(emulator.synced.wait(), seconds=30, what="the emulator's first LIST")
        yield emulator
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_emulator_stops_its_processes_on_sigterm_and_a_new_one_adopts_the_pods(
    pods: Pods,
    kube_api: client.ApiClient,
    namespace: str,
    dev_cluster: DevClusterInfo,
    private_node: str,
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "emulator"
    with (tmp_path / "first.log").open("wb") as first_log:
        first = await asyncio.create_subprocess_exec(
            *emulator_command(dev_cluster, node=private_node, state_dir=state_dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=first_log,
        )
    try:
        sleeper = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"
        await pods.create(
            make_pod(
                "proc",
                command=[sys.executable, "-c", sleeper],
                annotations={RUN: "process"},
                nodeName=private_node,
            )
        )
        await pods.create(make_pod("pause", nodeName=private_node))
        await pods.wait_phase("proc", "Running")
        paused = await pods.wait_phase("pause", "Running")
        log = state_dir / "pods" / namespace / "proc" / "main.log"
        pid = int((await file_contains(log, "\n")).split()[0])
        assert pid_alive(pid)

        first.send_signal(signal.SIGTERM)
        assert await within(first.wait(), seconds=30, what="the first emulator to exit") == 0
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    assert not pid_alive(pid)
    # A node going away does not change what the API server says about its pods.
    assert (await pods.read("proc")).status.phase == "Running"  # type: ignore[union-attr]

    async with emulator_in_process(kube_api, node=private_node, state_dir=state_dir):
        lost = await pods.wait_phase("proc", "Failed")
        end = terminated(lost)
        assert end.exit_code == 137
        assert end.reason == "ContainerStatusUnknown"
        still = await pods.read("pause")
        assert still is not None
        assert still.status.phase == "Running"
        assert still.status.pod_ip == paused.status.pod_ip
        await pods.create(make_pod("newcomer", nodeName=private_node))
        newcomer = await pods.wait_phase("newcomer", "Running")
        assert newcomer.status.pod_ip != paused.status.pod_ip
        for name in ("proc", "pause", "newcomer"):
            await pods.delete(name)
        for name in ("proc", "pause", "newcomer"):
            await pods.wait_gone(name)
