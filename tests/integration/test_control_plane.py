"""The local control plane is a real one: scheduling, garbage collection, RBAC, quotas, kubectl."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    LimitedApiFactory,
    create_pod_quota,
    manifest,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


def _pod(name: str, **spec: object) -> Any:
    """A pod manifest (a plain dict, which the client accepts wherever it types a V1Pod)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}],
            **spec,
        },
    }


async def test_scheduler_binds_a_pod_to_a_fake_node(
    kube_api: client.ApiClient, namespace: str, dev_cluster: DevClusterInfo
) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_pod(namespace, body=_pod("p1"), _request_timeout=REQUEST_TIMEOUT)

    async def bound() -> bool:
        pod = await core.read_namespaced_pod("p1", namespace, _request_timeout=REQUEST_TIMEOUT)
        return bool(pod.spec.node_name)

    await eventually(bound, what="pod bound by kube-scheduler")
    pod = await core.read_namespaced_pod("p1", namespace, _request_timeout=REQUEST_TIMEOUT)
    assert pod.spec.node_name in dev_cluster.node_names


async def test_deleting_a_deployment_garbage_collects_its_pods(
    kube_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    labels = {"app": "gc-test"}
    await apps.create_namespaced_deployment(
        namespace,
        body=manifest(
            {
                "metadata": {"name": "owner"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
                    },
                },
            }
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )

    async def pods_exist() -> bool:
        pods = await core.list_namespaced_pod(
            namespace, label_selector="app=gc-test", _request_timeout=REQUEST_TIMEOUT
        )
        return len(pods.items) == 2

    await eventually(pods_exist, what="Deployment → ReplicaSet → 2 pods")
    pods = await core.list_namespaced_pod(
        namespace, label_selector="app=gc-test", _request_timeout=REQUEST_TIMEOUT
    )
    assert all(p.metadata.owner_references for p in pods.items)

    await apps.delete_namespaced_deployment(
        "owner", namespace, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT
    )

    async def pods_gone() -> bool:
        left = await core.list_namespaced_pod(
            namespace, label_selector="app=gc-test", _request_timeout=REQUEST_TIMEOUT
        )
        # The garbage collector deletes them; the node emulator finishes bound ones.
        return all(p.metadata.deletion_timestamp for p in left.items) or not left.items

    await eventually(pods_gone, what="garbage collection of the Deployment's pods")


async def test_role_without_create_pods_gets_403(
    namespace: str, limited_api_factory: LimitedApiFactory
) -> None:
    limited = await limited_api_factory(
        namespace, [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    )
    core = client.CoreV1Api(limited)
    listed = await core.list_namespaced_pod(namespace, _request_timeout=REQUEST_TIMEOUT)
    assert listed.items == []
    with pytest.raises(client.ApiException) as caught:
        await core.create_namespaced_pod(
            namespace, body=_pod("denied"), _request_timeout=REQUEST_TIMEOUT
        )
    assert caught.value.status == 403
    assert 'cannot create resource "pods"' in json.loads(caught.value.body or b"{}")["message"]


async def test_resource_quota_rejects_a_pod_over_quota(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    await create_pod_quota(core, namespace=namespace, name="q", pods=1)
    await core.create_namespaced_pod(namespace, body=_pod("a"), _request_timeout=REQUEST_TIMEOUT)
    with pytest.raises(client.ApiException) as caught:
        await core.create_namespaced_pod(
            namespace, body=_pod("b"), _request_timeout=REQUEST_TIMEOUT
        )
    assert caught.value.status == 403
    message = json.loads(caught.value.body or b"{}")["message"]
    assert message.startswith('pods "b" is forbidden: exceeded quota: q')


async def test_kubectl_lists_pods_with_the_printed_kubeconfig(
    kube_api: client.ApiClient, namespace: str, dev_cluster: DevClusterInfo
) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_pod(
        namespace, body=_pod("seen-by-kubectl"), _request_timeout=REQUEST_TIMEOUT
    )
    status = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rmd", "dev-cluster", "status", "--dir", str(dev_cluster.dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    export = status.stdout.strip().splitlines()[-1]
    assert export == f"export KUBECONFIG={dev_cluster.kubeconfig}"
    result = await asyncio.to_thread(
        subprocess.run,
        ["kubectl", "get", "pods", "-n", namespace, "-o", "name"],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": export.split("=", 1)[1]},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pod/seen-by-kubectl" in result.stdout.split()
