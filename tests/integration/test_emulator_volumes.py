"""ConfigMap and Secret volumes on the emulated node: the process sees them at their mount
paths (a private mount namespace), read-only, and nothing appears on the host."""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest
from kubernetes_asyncio import client

from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo, manifest
from tests.integration.test_emulator import (
    RUN,
    Pods,
    file_contains,
    make_pod,
    pod_dir,
    read_text,
    terminated,
    waiting_reason,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def pods(kube_api: client.ApiClient, namespace: str) -> Pods:
    return Pods(kube_api, namespace)


async def _config_map(
    core: client.CoreV1Api, namespace: str, name: str, data: dict[str, str]
) -> None:
    await core.create_namespaced_config_map(
        namespace,
        body=manifest({"metadata": {"name": name}, "data": data}),
        _request_timeout=REQUEST_TIMEOUT,
    )


async def test_process_sees_config_map_and_secret_volumes_at_their_mount_paths(
    pods: Pods, namespace: str, dev_cluster: DevClusterInfo
) -> None:
    # A mount path below a directory that does not exist on this machine: the emulator must
    # not create it on the host (it overlays /opt inside the pod's mount namespace).
    base = f"/opt/rmd-volume-test-{secrets.token_hex(4)}"
    await _config_map(
        pods.core, namespace, "flink-config", {"config.yaml": "a: '1'\n", "other": "o"}
    )
    await pods.core.create_namespaced_secret(
        namespace,
        body=manifest({"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}}),
        _request_timeout=REQUEST_TIMEOUT,
    )
    script = (
        f"cat {base}/conf/config.yaml; cat {base}/conf/other; echo; "
        f"cat {base}/creds/pw; echo; stat -c '%a' {base}/creds/pw; "
        f"touch {base}/conf/new 2>/dev/null || echo read-only; "
        "ls /opt/flink/conf 2>/dev/null | head -1; echo done"
    )
    body = make_pod("volumes", command=["sh", "-c", script], annotations={RUN: "process"})
    body["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "conf", "mountPath": f"{base}/conf"},
        {"name": "creds", "mountPath": f"{base}/creds"},
    ]
    body["spec"]["volumes"] = [
        {"name": "conf", "configMap": {"name": "flink-config"}},
        {
            "name": "creds",
            "secret": {
                "secretName": "creds",
                "items": [{"key": "password", "path": "pw", "mode": 0o600}],
            },
        },
    ]
    await pods.create(body)
    done = await pods.wait_phase("volumes", "Succeeded")
    assert terminated(done).exit_code == 0
    log = await file_contains(pod_dir(dev_cluster, namespace, "volumes") / "main.log", "done")
    assert log.splitlines()[:5] == ["a: '1'", "o", "s3cret", "600", "read-only"]
    assert not await asyncio.to_thread(os.path.exists, base), "mount point made on the host"


async def test_missing_config_map_volume_waits_in_container_creating(
    pods: Pods, namespace: str, dev_cluster: DevClusterInfo
) -> None:
    body = make_pod(
        "needs-volume", command=["sh", "-c", "cat /srv/later/x; echo"], annotations={RUN: "process"}
    )
    body["spec"]["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": "/srv/later"}]
    body["spec"]["volumes"] = [
        {"name": "v", "configMap": {"name": "later"}},
        {"name": "maybe", "configMap": {"name": "absent", "optional": True}},
    ]
    await pods.create(body)
    waiting = await pods.wait(
        "needs-volume", lambda p: waiting_reason(p) == "ContainerCreating", what="ContainerCreating"
    )
    assert waiting.status.container_statuses[0].state.waiting.message == (
        'MountVolume.SetUp failed for volume "v" : configmap "later" not found'
    )
    await _config_map(pods.core, namespace, "later", {"x": "arrived"})
    await pods.wait_phase("needs-volume", "Succeeded")
    log = read_text(pod_dir(dev_cluster, namespace, "needs-volume") / "main.log")
    assert "arrived" in log
