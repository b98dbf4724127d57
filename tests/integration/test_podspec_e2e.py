"""A job whose TaskManagers come from a pod template with a sidecar and a node selector:
scheduled onto the matching fake node by the real scheduler, registered, fulfilled."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo
from tests.integration.daemon_harness import running_daemon

pytestmark = pytest.mark.integration

TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata:
  labels:
    team: streaming
spec:
  volumes:
    - name: shared-logs
      emptyDir: {}
  initContainers:
    - name: prepare
      image: busybox:1.36
      command: ["true"]
  containers:
    - name: flink-main-container
      volumeMounts:
        - name: shared-logs
          mountPath: /opt/flink/log
    - name: log-shipper
      image: busybox:1.36
      command: ["sleep", "3600"]
      volumeMounts:
        - name: shared-logs
          mountPath: /logs
"""


async def test_taskmanagers_from_a_template_land_on_the_selected_node(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube_api)
    node = dev_cluster.node_names[-1]
    pool = f"pool-{secrets.token_hex(3)}"
    await core.patch_node(
        node,
        body={"metadata": {"labels": {"rmd.dev/pool": pool}}},
        _request_timeout=REQUEST_TIMEOUT,
    )
    template = tmp_path / "taskmanager-template.yaml"
    template.write_text(TEMPLATE)
    extra = {
        "kubernetes.pod-template-file.taskmanager": str(template),
        "kubernetes.taskmanager.node-selector": f"rmd.dev/pool:{pool}",
    }
    try:
        async with running_daemon(
            dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, extra=extra
        ) as daemon:
            await daemon.put_requirement("job-t", 8)
            view = await daemon.wait_fulfilled("job-t")
            assert view["slots_allocated"] == 8
            pods = await daemon.pods()
            assert len(pods) == 2
            for pod in pods:
                assert pod.spec.node_name == node
                assert pod.spec.node_selector == {"rmd.dev/pool": pool}
                names = [c.name for c in pod.spec.containers]
                assert names == ["flink-main-container", "log-shipper"]
                assert [c.name for c in pod.spec.init_containers] == ["prepare"]
                assert {v.name for v in pod.spec.volumes} >= {"shared-logs"}
                assert pod.metadata.labels["team"] == "streaming"
                assert pod.metadata.labels["component"] == "taskmanager"
                assert pod.spec.restart_policy == "Never"
                assert pod.status.phase == "Running"
    finally:
        await core.patch_node(
            node,
            body={"metadata": {"labels": {"rmd.dev/pool": None}}},
            _request_timeout=REQUEST_TIMEOUT,
        )
